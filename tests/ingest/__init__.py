"""Feed ingest end to end, a file per concern (formerly test_ingest.py)."""
