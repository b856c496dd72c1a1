"""Capped exponential backoff with full jitter, for reconnect loops."""

from __future__ import annotations

import random


class Backoff:
    """``next()`` gives 0..base, 0..2*base, ... up to ``cap`` seconds; ``reset()`` after success.

    Jitter spreads the reconnects of several services that lost the same broker at once.
    """

    def __init__(self, base: float = 1.0, cap: float = 10.0) -> None:
        self._base = base
        self._cap = cap
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self._cap, self._base * 2**self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - not cryptographic

    def reset(self) -> None:
        self._attempt = 0
