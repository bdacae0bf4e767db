"""The ``chroma`` adapter: a Chroma server (``chroma run``) as the vector store.

A namespace is a collection (named with the run id, so ``<run id>-ns-<k>``),
made with ``get_or_create`` the first time a user touches it; a document is an
``upsert`` of its id, its text and an embedding from the suite's own hashing
embedder (:func:`service.embedding.embed`, 384 dimensions, no model to
download); a search is a ``query`` with the embedded query text; dropping a
namespace deletes its collection. The requests go through Chroma's HTTP API
(v2) on the user's own HTTP client, so they are timed and named like every
other request. Chroma reports no memory of its own: memory comes from the
process (``--target-pid``). The monitor counts the run's stored vectors
(:meth:`ChromaAdapter.count_vectors`: each of the run's collections' ``count``),
so the report can give memory per stored vector and what dropping them gave back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import requests

from memstress.common.config import ConfigError
from memstress.common.target import TargetError
from memstress.scenarios import target
from memstress.scenarios.spec import namespace, namespace_prefix
from memstress.scenarios.target import Reply

DATABASE = "/api/v2/tenants/default_tenant/databases/default_database"
COLLECTIONS = f"{DATABASE}/collections"
HEARTBEAT = "/api/v2/heartbeat"
PAGE = 100
"""Collections listed per request when the monitor counts the run's vectors."""

CREATE = "POST collections (get_or_create)"
UPSERT = "POST collections/[ns]/upsert"
QUERY = "POST collections/[ns]/query"
DELETE = "DELETE collections/[ns]"
NAMES = {"add_document": UPSERT, "search": QUERY, "drop_namespace": DELETE}
"""Each operation's Locust request name."""


def _embed(text: str) -> list[float]:
    from memstress.service.embedding import embed  # numpy; only where documents are embedded

    vector: list[float] = embed(text).astype(float).tolist()
    return vector


def _json(r: requests.Response) -> Any:
    """The JSON answer of a 200; TargetError naming the status or the body otherwise."""
    if r.status_code != 200:
        raise TargetError(f"{r.request.method} {r.url}: HTTP {r.status_code}")
    try:
        return r.json()
    except ValueError:
        raise TargetError(
            f"{r.request.method} {r.url}: HTTP 200 with a body that is not JSON"
        ) from None


class ChromaTarget:
    capabilities = frozenset({target.VECTORS})

    def __init__(self, user: Any) -> None:
        self.user = user
        self.ids: dict[str, str] = {}  # collection name -> id

    def _collection(self, name: str) -> str | None:
        if name not in self.ids:
            reply = self.user.request(
                "POST",
                COLLECTIONS,
                CREATE,
                {"name": name, "get_or_create": True},
            )
            if not reply.ok or not isinstance(reply.data, dict) or "id" not in reply.data:
                return None
            self.ids[name] = str(reply.data["id"])
        return self.ids[name]

    def add_document(self, namespace: str, doc_id: str, text: str) -> Reply:
        cid = self._collection(namespace)
        if cid is None:
            return Reply(False, False, 0)
        body = {"ids": [doc_id], "embeddings": [_embed(text)], "documents": [text]}
        reply: Reply = self.user.request("POST", f"{COLLECTIONS}/{cid}/upsert", UPSERT, body)
        return reply

    def search(self, namespace: str, query: str, k: int) -> Reply:
        cid = self._collection(namespace)
        if cid is None:
            return Reply(False, False, 0)
        body = {"query_embeddings": [_embed(query)], "n_results": k, "include": ["distances"]}
        reply: Reply = self.user.request("POST", f"{COLLECTIONS}/{cid}/query", QUERY, body)
        return reply

    def drop_namespace(self, namespace: str) -> Reply:
        self.ids.pop(namespace, None)
        reply: Reply = self.user.request(
            "DELETE", f"{COLLECTIONS}/{namespace}", DELETE, allow=(404,)
        )
        return reply

    def _lacks(self, what: str) -> Reply:  # never called: the scenarios check capabilities
        raise NotImplementedError(f"the chroma adapter has no {what}")

    def remember(self, agent: str, role: str, content: str) -> Reply:
        return self._lacks(target.CONVERSATION)

    def context(self, agent: str, query: str, k: int) -> Reply:
        return self._lacks(target.CONVERSATION)

    def history(self, agent: str, offset: int, limit: int) -> Reply:
        return self._lacks(target.CONVERSATION)

    def forget(self, agent: str) -> Reply:
        return self._lacks(target.CONVERSATION)

    def optimize(self, priority: str, reason: str) -> Reply:
        return self._lacks(target.OPTIMIZE)

    def cycle(self) -> Reply:
        return self._lacks(target.CYCLE)

    def stats(self) -> Reply:
        return self._lacks(target.STATS)

    def leak(self, n_bytes: int) -> Reply:
        return self._lacks(target.FAULTS)

    def ballast(self, n_bytes: int, ttl_s: float) -> Reply:
        return self._lacks(target.FAULTS)

    def reset_faults(self) -> Reply:
        return self._lacks(target.FAULTS)


class ChromaAdapter:
    name = "chroma"
    capabilities = ChromaTarget.capabilities
    schemes = ("http", "https")
    health_path = HEARTBEAT
    request_names = NAMES

    def __init__(self, config_path: str | None = None) -> None:
        if config_path:
            raise ConfigError("--adapter-config goes with --adapter http-map (chroma has none)")

    def connect(self, user: Any) -> ChromaTarget:
        return ChromaTarget(user)

    def wait_ready(self, host: str, deadline_s: float) -> None:
        url = f"{host.rstrip('/')}{HEARTBEAT}"
        end, last = time.monotonic() + deadline_s, "no answer"
        with requests.Session() as session:
            while time.monotonic() < end:
                try:
                    r = session.get(url, timeout=2.0)
                    if r.status_code == 200:
                        return
                    last = f"HTTP {r.status_code}"
                except requests.RequestException as exc:
                    last = type(exc).__name__
                time.sleep(0.1)
        raise TargetError(f"GET {url} did not answer 200 in {deadline_s:g} s ({last})")

    def count_vectors(
        self, session: requests.Session, host: str, run_id: str, timeout: float
    ) -> int:
        """Records in the run's collections (named ``<run id>-ns-<k>``), each one's ``count``."""
        base, prefix = f"{host.rstrip('/')}{COLLECTIONS}", namespace_prefix(run_id)
        ids: list[str] = []
        try:
            for offset in range(0, 100 * PAGE, PAGE):  # bounded: at most 100 pages
                page = _json(
                    session.get(base, params={"limit": PAGE, "offset": offset}, timeout=timeout)
                )
                if not isinstance(page, list):
                    raise TargetError(f"GET {COLLECTIONS}: not a list of collections")
                ids += [
                    str(c.get("id"))
                    for c in page
                    if isinstance(c, dict) and str(c.get("name", "")).startswith(prefix)
                ]
                if len(page) < PAGE:
                    break
            counts = []
            for cid in ids:
                r = session.get(f"{base}/{cid}/count", timeout=timeout)
                # dropped between the list and its count (the cleanup stage): none left
                counts.append(0 if r.status_code == 404 else _json(r))
        except requests.RequestException as exc:
            raise TargetError(f"GET {COLLECTIONS}: {type(exc).__name__}") from None
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
            raise TargetError(f"GET {COLLECTIONS}/[id]/count: not a whole number")
        return sum(counts)

    def sweep(self, host: str, run_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Delete the run's collections once more (a 404 is gone already)."""
        done: dict[str, Any] = {"namespaces": 0, "complete": False}
        with requests.Session() as session:
            try:
                for k in range(int(params.get("namespaces", 0))):
                    url = f"{host.rstrip('/')}{COLLECTIONS}/{namespace(run_id, k)}"
                    if session.delete(url, timeout=5.0).status_code < 300:
                        done["namespaces"] += 1
                done["complete"] = True
            except requests.RequestException as exc:
                done["error"] = type(exc).__name__
        return done
