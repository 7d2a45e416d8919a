"""The web endpoint over real HTTP, a file per part of the site (formerly test_web.py)."""
