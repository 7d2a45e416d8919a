"""Where the shipped files live: templates and examples, in a wheel or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """Return the folder ``name`` (templates, examples) that this install ships.

    A wheel carries it inside the package; an editable checkout keeps it at the
    repository's top level, where the product card fixes it.
    """
    for candidate in (_PACKAGE / name, _PACKAGE.parent.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"Gazette's {name}/ folder is missing from this installation.")
