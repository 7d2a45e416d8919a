"""What the tests share: the installation, the servers on loopback, message checks, workers.

Fixtures live in ``fixtures`` and reach the tests through tests/conftest.py; everything
else is imported by name from its module here, never from another test file.
"""
