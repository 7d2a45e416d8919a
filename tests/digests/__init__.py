"""Digest issues as readers receive them, a file per concern (formerly test_digest.py)."""
