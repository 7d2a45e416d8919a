"""The operator CLI, ``gazette``.

One module per noun; commands resolve arguments and call the same domain functions
the workers call.
"""

from __future__ import annotations

from gazette.cli import database, demo, setup  # noqa: F401  (registers commands)
from gazette.cli.app import main

__all__ = ["main"]
