"""The operator CLI, ``gazette``.

One module per noun; commands resolve arguments and call the same domain functions
the workers call.
"""

from __future__ import annotations

from gazette.cli import (  # noqa: F401  (importing registers the commands)
    articles,
    database,
    demo,
    digest,
    feeds,
    newsletters,
    processes,
    serve,
    setup,
    subscribers,
)
from gazette.cli.app import main

__all__ = ["main"]
