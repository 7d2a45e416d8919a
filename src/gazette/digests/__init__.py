"""Digests: planning issues, the ledger, composing, sending, previews and the archive."""
