"""Ingestion: bulk NDJSON uploads, the job queue, jobs and workers."""
