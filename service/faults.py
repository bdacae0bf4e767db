"""Fault instruments: a simulated leak and releasable ballast, both real resident memory.

Each block is a ``bytearray`` filled with a non-zero byte, so every page is
touched and counts in RSS. Ballast is accounted in its own tier and released
on ``ttl_s`` expiry or reset; leaked blocks are kept in a list that no tier
counts, which is exactly what makes them a leak to the manager.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

REQUEST_CAP_BUDGETS = 2  # one request may add at most this many budgets of fault memory
TOTAL_CAP_BUDGETS = 4  # ... and leak plus ballast together at most this many


def touched_block(n: int) -> bytearray:
    """``n`` bytes of resident memory (a one-byte repeat is a memset over every page)."""
    return bytearray(b"\x01") * n


@dataclass
class Ballast:
    id: int
    buf: bytearray
    expires_at: float | None  # monotonic; None: until reset


@dataclass
class Faults:
    _leaked: list[bytearray] = field(default_factory=list)
    ballast: dict[int, Ballast] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def leak_bytes(self) -> int:
        return sum(len(b) for b in self._leaked)

    @property
    def ballast_bytes(self) -> int:
        return sum(len(b.buf) for b in self.ballast.values())

    def leak(self, n: int) -> None:
        self._leaked.append(touched_block(n))

    def add_ballast(self, n: int, ttl_s: float | None) -> Ballast:
        expires = time.monotonic() + ttl_s if ttl_s is not None else None
        b = Ballast(next(self._ids), touched_block(n), expires)
        self.ballast[b.id] = b
        return b

    def release_expired(self, now: float | None = None) -> int:
        """Drop ballast whose ttl has passed; returns the bytes released."""
        now = time.monotonic() if now is None else now
        gone = [
            b for b in self.ballast.values() if b.expires_at is not None and b.expires_at <= now
        ]
        for b in gone:
            del self.ballast[b.id]
        return sum(len(b.buf) for b in gone)

    def reset(self) -> tuple[int, int]:
        """Drop all leak and ballast memory; returns (leak bytes, ballast bytes) released."""
        leaked, ballast = self.leak_bytes, self.ballast_bytes
        self._leaked.clear()
        self.ballast.clear()
        return leaked, ballast

    def has_expired(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return any(b.expires_at is not None and b.expires_at <= now for b in self.ballast.values())
