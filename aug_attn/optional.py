"""Imports of packages that belong to an optional extra of ``pyproject.toml``.

Every such import in ``aug_attn`` and ``aug_attn_tasks`` goes through :func:`import_extra`, so a
missing package is an error that names the extra to install, never a bare ``ModuleNotFoundError``
deep in a run; ``tests/test_dependencies.py`` checks that no module imports an extra's package any
other way.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "import_extra", "install_hint"]


class MissingExtraError(ImportError):
    """An optional package is not installed; the message says which extra brings it."""


def install_hint(extra: str) -> str:
    """The install command of ``extra``, for a checkout and for an installed package."""
    return f"pip install -e \".[{extra}]\" (or pip install \"aug-attn[{extra}]\")"


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` (a package of the extra ``extra``) or raise :class:`MissingExtraError`
    saying that ``purpose`` needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(f"{purpose} needs the optional package '{module}': {install_hint(extra)}") from error
