"""Snapshots of collections and their restore (docs/api.md "Snapshots")."""
