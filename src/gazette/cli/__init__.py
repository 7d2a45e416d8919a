"""The operator CLI, ``gazette``.

One module per noun; commands resolve arguments and call the same domain functions
the workers call. Commands of other packages (the ``worker`` package's ``worker`` and
``beat``) join through the ``gazette.commands`` entry point group.
"""

from __future__ import annotations

from gazette.cli import (  # noqa: F401  (importing registers the commands)
    articles,
    bounces,
    database,
    demo,
    digest,
    digest_pause,
    feeds,
    newsletters,
    run,
    serve,
    setup,
    subscribers,
    topics,
)
from gazette.cli.app import main

__all__ = ["main"]
