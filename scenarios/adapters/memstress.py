"""The ``memstress`` adapter: the bundled service's HTTP API (``scenarios.api``), as always.

Request names are the endpoints' (``POST /agents/[id]/messages`` ...), which the
reports look for; a 429/503 with ``Retry-After`` is shed (see
:meth:`scenarios.base.MemstressUser.call`). The stored vectors the monitor counts
are the service's (``tiers.vectors.stored`` of ``/memory/stats``): the bundled
service serves one run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import requests

from memstress.common.config import ConfigError
from memstress.common.target import TargetClient, TargetError
from memstress.scenarios import api, target
from memstress.scenarios.target import Reply

NAMES = {
    "remember": api.MESSAGE_ADD.name,
    "context": api.CONTEXT.name,
    "history": api.MESSAGES.name,
    "forget": api.AGENT_DELETE.name,
    "add_document": api.DOCUMENT_ADD.name,
    "search": api.SEARCH.name,
    "drop_namespace": api.NAMESPACE_DELETE.name,
    "optimize": api.OPTIMIZE.name,
    "cycle": api.CYCLE.name,
    "stats": api.STATS.name,
    "leak": api.LEAK.name,
    "ballast": api.BALLAST.name,
    "reset_faults": api.RESET.name,
}
"""Each operation's Locust request name (its endpoint's)."""


class MemstressTarget:
    capabilities = frozenset(target.CAPABILITIES)

    def __init__(self, user: Any) -> None:
        self.call: Callable[..., Reply] = user.call  # MemstressUser.call: naming, shedding

    def remember(self, agent: str, role: str, content: str) -> Reply:
        return self.call(api.MESSAGE_ADD, {"role": role, "content": content}, id=agent)

    def context(self, agent: str, query: str, k: int) -> Reply:
        return self.call(api.CONTEXT, query={"query": query, "k": k}, id=agent)

    def history(self, agent: str, offset: int, limit: int) -> Reply:
        return self.call(api.MESSAGES, query={"offset": offset, "limit": limit}, id=agent)

    def forget(self, agent: str) -> Reply:
        return self.call(api.AGENT_DELETE, allow=(404,), id=agent)

    def add_document(self, namespace: str, doc_id: str, text: str) -> Reply:
        body = {"namespace": namespace, "doc_id": doc_id, "text": text}
        return self.call(api.DOCUMENT_ADD, body)

    def search(self, namespace: str, query: str, k: int) -> Reply:
        return self.call(api.SEARCH, {"namespace": namespace, "query": query, "k": k})

    def drop_namespace(self, namespace: str) -> Reply:
        return self.call(api.NAMESPACE_DELETE, allow=(404,), ns=namespace)

    def optimize(self, priority: str, reason: str) -> Reply:
        return self.call(api.OPTIMIZE, {"priority": priority, "reason": reason})

    def cycle(self) -> Reply:
        return self.call(api.CYCLE)

    def stats(self) -> Reply:
        return self.call(api.STATS)

    def leak(self, n_bytes: int) -> Reply:
        return self.call(api.LEAK, {"bytes": n_bytes})

    def ballast(self, n_bytes: int, ttl_s: float) -> Reply:
        return self.call(api.BALLAST, {"bytes": n_bytes, "ttl_s": ttl_s})

    def reset_faults(self) -> Reply:
        return self.call(api.RESET, {})


class MemstressAdapter:
    name = "memstress"
    capabilities = MemstressTarget.capabilities
    schemes = ("http", "https")
    health_path = "/health"
    request_names = NAMES

    def __init__(self, config_path: str | None = None) -> None:
        if config_path:
            raise ConfigError("--adapter-config goes with --adapter http-map (memstress has none)")

    def connect(self, user: Any) -> MemstressTarget:
        return MemstressTarget(user)

    def wait_ready(self, host: str, deadline_s: float) -> None:
        client = TargetClient(host, timeout=2.0)
        try:
            client.wait_healthy(deadline_s)
        finally:
            client.close()

    def count_vectors(
        self, session: requests.Session, host: str, run_id: str, timeout: float
    ) -> int:
        """The vectors (chunks) the service stores: ``tiers.vectors.stored`` of its stats."""
        url = f"{host.rstrip('/')}{api.STATS.path}"
        try:
            r = session.get(url, timeout=timeout)
            data = r.json() if r.status_code == 200 else None
        except (requests.RequestException, ValueError) as exc:
            raise TargetError(f"GET {api.STATS.path}: {type(exc).__name__}") from None
        vectors = (
            ((data or {}).get("tiers") or {}).get("vectors") if isinstance(data, dict) else None
        )
        stored = vectors.get("stored") if isinstance(vectors, dict) else None
        if not isinstance(stored, int) or isinstance(stored, bool):
            raise TargetError(f"GET {api.STATS.path}: no whole tiers.vectors.stored")
        return stored

    def sweep(self, host: str, run_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        from memstress.scenarios.spec import sweep_run_data

        return sweep_run_data(host, run_id, params)
