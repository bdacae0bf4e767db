"""Per-agent conversation memory: recent turns and their embeddings in RAM over SQLite.

Each resident agent holds its most recent turns (at most ``2 * WINDOW``) with
one embedding row per turn in a contiguous float32 matrix, for the context
endpoint's relevance ranking. Every turn is in SQLite before it is in RAM, so
the manager may compact old turns into short summaries or evict whole agents
at any time: reads that need the full text go through to the store.

A turn in RAM is a plain tuple ``(seq, role, content, ts, compacted)``: tuples
of atomic values are untracked by the garbage collector, which keeps
``gc.collect()`` cheap however many turns are held.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Final

import numpy as np

from memstress.service.embedding import DIMS, VECTOR_BYTES, EmbeddingCache
from memstress.service.store import Message, Store

WINDOW = 256  # turns reloaded from disk; RAM keeps between WINDOW and 2 * WINDOW
KEEP_FULL = 8  # compaction leaves an agent's last turns whole
SUMMARY_CHARS = 80
TURN_OVERHEAD = 64 + 8 + 24  # the tuple, its list slot, the ts float
AGENT_OVERHEAD = 512
ROLES = {r: r for r in ("system", "user", "assistant", "tool")}  # one shared str per role

Turn = tuple[int, str, str, float, bool]
SEQ: Final = 0
ROLE: Final = 1
CONTENT: Final = 2
TS: Final = 3
COMPACTED: Final = 4


def summarize(content: str) -> str:
    return content[:SUMMARY_CHARS].rstrip() + "…"


def _turn_bytes(t: Turn) -> int:
    return TURN_OVERHEAD + sys.getsizeof(t[CONTENT])


def _turn_json(t: Turn) -> dict[str, object]:
    return {"seq": t[SEQ], "role": t[ROLE], "content": t[CONTENT], "ts": t[TS]}


class AgentMemory:
    def __init__(self, total: int) -> None:
        self.turns: list[Turn] = []
        self.vecs = np.empty((16, DIMS), dtype=np.float32)
        self.total = total  # turns stored on disk
        self.bytes = AGENT_OVERHEAD
        self.compacted = 0

    def append(self, t: Turn, vec: np.ndarray) -> None:
        n = len(self.turns)
        if n == self.vecs.shape[0]:
            grown = np.empty((n * 2, DIMS), dtype=np.float32)
            grown[:n] = self.vecs
            self.vecs = grown
        self.vecs[n] = vec
        self.turns.append(t)
        self.bytes += _turn_bytes(t) + VECTOR_BYTES
        if len(self.turns) >= 2 * WINDOW:
            self._drop_oldest(len(self.turns) - WINDOW)

    def _drop_oldest(self, k: int) -> None:
        for t in self.turns[:k]:
            self.bytes -= _turn_bytes(t) + VECTOR_BYTES
            self.compacted -= t[COMPACTED]
        del self.turns[:k]
        n = len(self.turns)
        self.vecs[:n] = self.vecs[k : k + n]

    @property
    def first_seq(self) -> int:
        return self.turns[0][SEQ] if self.turns else self.total

    def compact(self, keep_full: int) -> int:
        """Replace turns older than the last ``keep_full`` by summaries; returns bytes freed."""
        freed = 0
        for i in range(max(0, len(self.turns) - keep_full)):
            t = self.turns[i]
            if t[COMPACTED] or len(t[CONTENT]) <= SUMMARY_CHARS + 1:
                continue
            short: Turn = (t[SEQ], t[ROLE], summarize(t[CONTENT]), t[TS], True)
            freed += _turn_bytes(t) - _turn_bytes(short)
            self.turns[i] = short
            self.compacted += 1
        self.bytes -= freed
        return freed


class ConversationMemory:
    def __init__(self, store: Store, cache: EmbeddingCache) -> None:
        self.store = store
        self.cache = cache
        self.agents: OrderedDict[str, AgentMemory] = OrderedDict()  # least recently used first
        self.bytes = 0
        self.items = 0
        self.loads = 0

    def _account(self, agent: AgentMemory, before_bytes: int, before_items: int) -> None:
        self.bytes += agent.bytes - before_bytes
        self.items += len(agent.turns) - before_items

    def _get(self, agent_id: str) -> AgentMemory | None:
        """The resident agent, loaded from disk when needed; None when it has no turns."""
        agent = self.agents.get(agent_id)
        if agent is not None:
            self.agents.move_to_end(agent_id)
            return agent
        total = self.store.message_total(agent_id)
        if total == 0:
            return None
        agent = AgentMemory(total)
        for m in self.store.recent_messages(agent_id, WINDOW):
            agent.append(
                (m.seq, ROLES.get(m.role, m.role), m.content, m.ts, False),
                self.cache.get(m.content),
            )
        self.agents[agent_id] = agent
        self._account(agent, 0, 0)
        self.loads += 1
        return agent

    # --- requests ----------------------------------------------------------------

    def append(self, agent_id: str, role: str, content: str) -> Message:
        """Store a turn durably, then cache it; returns the stored turn."""
        vec = self.cache.get(content)  # before the commit: a failure here stores nothing
        msg = self.store.add_message(agent_id, role, content)
        agent = self.agents.get(agent_id)
        if agent is None:
            self._get(agent_id)  # loads the window, the new turn included
        else:
            self.agents.move_to_end(agent_id)
            b, i = agent.bytes, len(agent.turns)
            agent.append((msg.seq, ROLES.get(role, role), content, msg.ts, False), vec)
            agent.total = msg.seq + 1
            self._account(agent, b, i)
        return msg

    def total(self, agent_id: str) -> int:
        agent = self.agents.get(agent_id)
        return agent.total if agent is not None else self.store.message_total(agent_id)

    def messages(
        self, agent_id: str, offset: int, limit: int
    ) -> tuple[int, list[dict[str, object]], str]:
        """Turns oldest first from RAM when all are there whole, else from disk."""
        agent = self.agents.get(agent_id)
        if agent is not None and agent.turns and offset >= agent.first_seq:
            first = agent.first_seq
            chosen = agent.turns[offset - first : offset - first + limit]
            if not any(t[COMPACTED] for t in chosen):
                self.agents.move_to_end(agent_id)
                return agent.total, [_turn_json(t) for t in chosen], "ram"
        total = self.total(agent_id)
        rows = self.store.messages(agent_id, offset, limit) if offset < total else []
        return total, [m.as_json() for m in rows], "disk"

    def context(
        self, agent_id: str, query: str, k: int, recent: int
    ) -> tuple[int, list[dict[str, object]], list[dict[str, object]]]:
        """(total, the last ``recent`` turns, the ``k`` turns most similar to ``query``)."""
        agent = self._get(agent_id)
        if agent is None:
            return 0, [], []
        last = agent.turns[len(agent.turns) - recent :] if recent else []
        picked: list[tuple[Turn, float | None]] = [(t, None) for t in last]
        relevant: list[tuple[Turn, float | None]] = []
        if query and k and agent.turns:
            q = self.cache.get(query)
            n = len(agent.turns)
            scores = agent.vecs[:n] @ q
            kk = min(k, n)
            top = np.argpartition(-scores, kk - 1)[:kk] if kk < n else np.arange(n)
            top = top[np.argsort(-scores[top], kind="stable")]
            relevant = [(agent.turns[int(i)], float(scores[int(i)])) for i in top]
        # Compacted turns are summaries in RAM; the answer carries the full text from disk.
        need = [t[SEQ] for t, _ in picked + relevant if t[COMPACTED]]
        full = self.store.messages_by_seq(agent_id, need)

        def out(t: Turn, score: float | None) -> dict[str, object]:
            d = full[t[SEQ]].as_json() if t[SEQ] in full else _turn_json(t)
            if score is not None:
                d["score"] = round(score, 6)
            return d

        return agent.total, [out(t, s) for t, s in picked], [out(t, s) for t, s in relevant]

    def delete(self, agent_id: str) -> int:
        """Forget an agent on disk and in RAM; returns the turns deleted."""
        self.evict(agent_id)
        return self.store.delete_agent(agent_id)

    # --- what the memory manager does --------------------------------------------

    def evict(self, agent_id: str) -> int:
        agent = self.agents.pop(agent_id, None)
        if agent is None:
            return 0
        self.bytes -= agent.bytes
        self.items -= len(agent.turns)
        return agent.bytes

    def trim_to(self, limit_bytes: int) -> int:
        """Evict least recently used agents until within the limit."""
        freed = 0
        while self.bytes > limit_bytes and self.agents:
            freed += self.evict(next(iter(self.agents)))
        return freed

    def compact(self) -> int:
        freed = 0
        for agent in self.agents.values():
            freed += agent.compact(KEEP_FULL)
        self.bytes -= freed
        return freed

    def evict_all(self) -> int:
        freed = self.bytes
        self.agents.clear()
        self.bytes = 0
        self.items = 0
        return freed

    @property
    def compacted_turns(self) -> int:
        return sum(a.compacted for a in self.agents.values())
