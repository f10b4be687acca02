"""Ingest: receive → normalize → price → redact → store."""
