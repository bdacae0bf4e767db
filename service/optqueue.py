"""The bounded, coalescing priority queue of ``POST /memory/optimize`` requests.

Requests wait in one FIFO per priority and are drained highest priority first.
A request identical to one still queued (same priority and reason) is
coalesced into it: the caller gets the queued request's id and position, and
the work runs once. A full queue refuses new work, so the caller sees 429.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field

PRIORITIES = ("critical", "high", "normal", "low")  # drain order


@dataclass
class OptimizationRequest:
    request_id: str
    priority: str
    reason: str
    submitted: float = field(default_factory=time.monotonic)
    coalesced: int = 0  # later identical requests folded into this one


class OptimizationQueue:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lanes: dict[str, deque[OptimizationRequest]] = {p: deque() for p in PRIORITIES}
        self._queued: dict[tuple[str, str], OptimizationRequest] = {}
        self._ids = itertools.count(1)
        self.accepted = 0
        self.coalesced = 0
        self.rejected = 0
        self.completed = 0

    def __len__(self) -> int:
        return len(self._queued)

    def position(self, req: OptimizationRequest) -> int:
        """1-based place in drain order."""
        ahead = 0
        for p in PRIORITIES:
            lane = self._lanes[p]
            if p == req.priority:
                return ahead + lane.index(req) + 1
            ahead += len(lane)
        raise ValueError(req.request_id)

    def submit(self, priority: str, reason: str) -> tuple[OptimizationRequest, bool] | None:
        """Queue a request; (request, coalesced), or None when the queue is full."""
        if priority not in self._lanes:
            raise ValueError(f"priority {priority!r} (valid: {', '.join(PRIORITIES)})")
        key = (priority, reason)
        same = self._queued.get(key)
        if same is not None:
            same.coalesced += 1
            self.coalesced += 1
            return same, True
        if len(self._queued) >= self.capacity:
            self.rejected += 1
            return None
        req = OptimizationRequest(f"opt-{next(self._ids):06d}", priority, reason)
        self._lanes[priority].append(req)
        self._queued[key] = req
        self.accepted += 1
        return req, False

    def pop(self) -> OptimizationRequest | None:
        for p in PRIORITIES:
            lane = self._lanes[p]
            if lane:
                req = lane.popleft()
                del self._queued[(req.priority, req.reason)]
                self.completed += 1
                return req
        return None

    def stats(self) -> dict[str, int]:
        return {
            "length": len(self),
            "capacity": self.capacity,
            "accepted": self.accepted,
            "coalesced": self.coalesced,
            "rejected": self.rejected,
            "completed": self.completed,
        }
