"""Bulk ingestion: NDJSON uploads validated line by line, a queue (Redis Streams or in-process), jobs and workers."""
