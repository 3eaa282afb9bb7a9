"""A process-wide choice among named modes, set in code or read from an environment variable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Switch"]


class Switch:
    """``what`` takes one of ``modes``: the last :meth:`set` wins, else the environment variable
    ``env``, else ``default``; a value outside ``modes`` is an error naming where it came from.

    The neighbour backend (:mod:`aug_attn.geometry.neighbors`) and the native kernels
    (:mod:`aug_attn.attention.native`) are such switches.
    """

    def __init__(self, what: str, env: str, modes: tuple[str, ...], default: str = "auto") -> None:
        self.what, self.env, self.modes, self.default = what, env, modes, default
        self._mode: str | None = None  # None: read the environment at the next call

    def _check(self, mode: str, source: str) -> str:
        if mode not in self.modes:
            raise ValueError(f"{source} must be one of {', '.join(self.modes)}, got {mode!r}")
        return mode

    def current(self) -> str:
        if self._mode is not None:
            return self._mode
        return self._check(os.environ.get(self.env, self.default), self.env)

    def set(self, mode: str) -> str:
        """Choose ``mode``; returns the previous one."""
        previous = self.current()
        self._mode = self._check(mode, self.what)
        return previous

    @contextmanager
    def using(self, mode: str) -> Iterator[None]:
        """Run a block with ``mode``, then restore the previous one."""
        previous = self.set(mode)
        try:
            yield
        finally:
            self.set(previous)
