"""The reference service under faults and bad input: nothing acknowledged is lost.

Body-size limit (declared and chunked), faults off by default, a loopback-only
listener, restarts after SIGTERM and kill -9, and writes during a memory
crisis: every 201 is stored, every 503 is not, exactly, before and after a
kill -9. Each test runs the real service as its own process on free loopback
ports; none waits longer than it must.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from memstress.common.units import MB
from memstress.runner.service import ManagedService
from tests.conftest import start_service

LIMIT = 1024 * 1024  # the shipped config's service.max_body_bytes
TIMEOUT = 10


def get(svc: ManagedService, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{svc.url}{path}", params=params or None, timeout=TIMEOUT)


def post(svc: ManagedService, path: str, body: Any = None) -> requests.Response:
    return requests.post(f"{svc.url}{path}", json=body, timeout=TIMEOUT)


def say(svc: ManagedService, agent: str, content: str) -> requests.Response:
    return post(svc, f"/agents/{agent}/messages", {"role": "user", "content": content})


def stats(svc: ManagedService) -> dict[str, Any]:
    r = get(svc, "/memory/stats")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def contents(svc: ManagedService, agent: str) -> list[str]:
    """Every stored turn of ``agent``, oldest first (one page: the tests stay under 1000)."""
    body = get(svc, f"/agents/{agent}/messages", limit=1000).json()
    assert body["total"] == len(body["messages"])
    return [m["content"] for m in body["messages"]]


def document(topic: str, sentences: int = 12) -> str:
    """A text that chunks into several pieces, every one naming its topic."""
    return " ".join(
        f"Sentence {i} of the {topic} document explains {topic} in plain detail."
        for i in range(sentences)
    )


def top_hit(svc: ManagedService, namespace: str, query: str) -> dict[str, Any]:
    r = post(svc, "/vectors/search", {"namespace": namespace, "query": query, "k": 3})
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()["hits"]
    assert hits, f"no hits for {query!r} in {namespace}"
    return hits[0]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedService]:
    """A service started the way a user would: no --enable-faults, no --bind."""
    svc = start_service(tmp_path_factory.mktemp("plain") / "data", faults=False)
    yield svc
    svc.stop()


# --- the body-size limit -------------------------------------------------------------


def message_body(size: int) -> bytes:
    """A JSON message body of exactly ``size`` bytes."""
    head, tail = b'{"role": "user", "content": "', b'"}'
    return head + b"m" * (size - len(head) - len(tail)) + tail


def document_body(namespace: str, doc_id: str, size: int) -> bytes:
    """A JSON document body of exactly ``size`` bytes."""
    head = f'{{"namespace": "{namespace}", "doc_id": "{doc_id}", "text": "'.encode()
    tail = b'"}'
    filler = size - len(head) - len(tail)
    return head + (b"w " * filler)[:filler] + tail


def test_a_body_of_exactly_the_limit_is_stored_and_one_byte_more_is_not(
    plain: ManagedService,
) -> None:
    url = f"{plain.url}/agents/at-limit/messages"
    headers = {"Content-Type": "application/json"}
    r = requests.post(url, data=message_body(LIMIT), headers=headers, timeout=TIMEOUT)
    assert r.status_code == 201, r.text[:200]
    r = requests.post(url, data=message_body(LIMIT + 1), headers=headers, timeout=TIMEOUT)
    assert r.status_code == 413
    assert r.json() == {
        "error": f"request body is larger than {LIMIT} bytes",
        "field": "body",
        "limit_bytes": LIMIT,
    }
    assert get(plain, "/agents/at-limit/messages").json()["total"] == 1


def chunked(body: bytes, piece: int = 64 * 1024) -> Iterator[bytes]:
    """The body as a generator, which requests sends chunked, without a Content-Length."""
    for i in range(0, len(body), piece):
        yield body[i : i + piece]


@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_an_oversized_body_gets_413_and_leaves_nothing_half_written(
    plain: ManagedService, transfer: str
) -> None:
    agent, ns = f"limit-{transfer}", f"limit-{transfer}"
    before = [f"turn {i} before the big one" for i in range(2)]
    for text in before:
        assert say(plain, agent, text).status_code == 201
    original = document("lighthouse")
    r = post(plain, "/vectors/documents", {"namespace": ns, "doc_id": "d", "text": original})
    assert r.status_code == 201
    stored_chunks = stats(plain)["tiers"]["vectors"]["stored"]

    for path, payload in (
        (f"/agents/{agent}/messages", message_body(3 * LIMIT)),
        ("/vectors/documents", document_body(ns, "d", 2 * LIMIT + 1)),
    ):
        data: bytes | Iterator[bytes] = (
            payload if transfer == "content-length" else chunked(payload)
        )
        r = requests.post(
            f"{plain.url}{path}",
            data=data,
            headers={"Content-Type": "application/json"},
            timeout=TIMEOUT,
        )
        sent = r.request.headers
        if transfer == "chunked":
            assert sent["Transfer-Encoding"] == "chunked" and "Content-Length" not in sent
        else:
            assert int(sent["Content-Length"]) == len(payload)
        assert r.status_code == 413, (path, r.status_code, r.text[:200])
        assert r.headers["content-type"] == "application/json"
        assert r.json()["field"] == "body" and r.json()["limit_bytes"] == LIMIT

    assert contents(plain, agent) == before  # no new message, nothing truncated kept
    assert stats(plain)["tiers"]["vectors"]["stored"] == stored_chunks
    hit = top_hit(plain, ns, "lighthouse")
    assert hit["doc_id"] == "d" and hit["text"] in original  # the old version, whole
    assert say(plain, agent, "and the connection after").status_code == 201


# --- faults off by default, loopback only --------------------------------------------


@pytest.mark.parametrize("path", ["/faults/leak", "/faults/ballast", "/faults/reset", "/faults"])
@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_without_enable_faults_every_fault_path_is_404(
    plain: ManagedService, path: str, method: str
) -> None:
    r = requests.request(
        method, f"{plain.url}{path}", json={"bytes": 64 * MB, "ttl_s": 60}, timeout=TIMEOUT
    )
    assert r.status_code == 404, (method, path, r.status_code)
    assert r.json() == {"error": "Not Found"}


def test_without_enable_faults_no_fault_memory_is_held_or_documented(
    plain: ManagedService,
) -> None:
    for path in ("/faults/leak", "/faults/ballast"):
        assert post(plain, path, {"bytes": 64 * MB}).status_code == 404
    ballast = stats(plain)["tiers"]["ballast"]
    assert ballast["items"] == 0 and ballast["bytes"] == 0
    paths = get(plain, "/openapi.json").json()["paths"]
    assert paths and not [p for p in paths if p.startswith("/faults")]


def test_listens_on_loopback_only_by_default(plain: ManagedService) -> None:
    listening = [
        c.laddr
        for c in psutil.Process(plain.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert [addr.port for addr in listening] == [plain.port]
    assert all(ipaddress.ip_address(addr.ip).is_loopback for addr in listening), listening


def other_addresses() -> list[str]:
    """This machine's own addresses that are not loopback (nor link-local)."""
    found = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(a.address.split("%")[0])
            if not (ip.is_loopback or ip.is_link_local):
                found.append(str(ip))
    return found


def test_is_not_reachable_on_the_machines_other_addresses(plain: ManagedService) -> None:
    addresses = other_addresses()
    if not addresses:
        pytest.skip("this machine has no address but loopback")
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            with pytest.raises(ConnectionRefusedError):
                s.connect((address, plain.port))


# --- restarts ------------------------------------------------------------------------

AGENTS = ("ada", "grace", "linus")
DOCS = {
    ("kb-one", "harbour"): document("harbour"),
    ("kb-one", "glacier"): document("glacier", 3),
    ("kb-two", "volcano"): document("volcano", 20),
}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_restart_serves_everything_stored_before(tmp_path: Path, sig: signal.Signals) -> None:
    data = tmp_path / "data"
    svc = start_service(data, faults=False)
    written: dict[str, list[str]] = {a: [] for a in AGENTS}
    chunks = 0
    try:
        for i in range(75):
            agent = AGENTS[i % len(AGENTS)] if i < 60 else AGENTS[0]  # uneven: 35, 20, 20
            text = f"{agent} says #{i}: remember the number {i * 7}"
            assert say(svc, agent, text).status_code == 201
            written[agent].append(text)
        for (ns, doc_id), text in DOCS.items():
            r = post(svc, "/vectors/documents", {"namespace": ns, "doc_id": doc_id, "text": text})
            assert r.status_code == 201
            chunks += r.json()["chunks"]
        assert chunks > len(DOCS)  # some documents span several chunks
    finally:
        code = svc.stop(sig)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)

    svc = start_service(data, faults=False)
    try:
        page = 7
        for agent, texts in written.items():
            seen: list[str] = []
            for offset in range(0, len(texts) + page, page):  # one page past the end
                body = get(svc, f"/agents/{agent}/messages", offset=offset, limit=page).json()
                assert (body["total"], body["offset"], body["limit"]) == (len(texts), offset, page)
                seqs = [m["seq"] for m in body["messages"]]
                assert seqs == list(range(offset, min(offset + page, len(texts))))
                seen += [m["content"] for m in body["messages"]]
            assert seen == texts, agent
        assert stats(svc)["tiers"]["vectors"]["stored"] == chunks
        for (ns, doc_id), text in DOCS.items():
            hit = top_hit(svc, ns, f"{doc_id} in plain detail")
            assert hit["doc_id"] == doc_id and hit["text"] in text
        assert say(svc, AGENTS[0], "after the restart").json()["seq"] == len(written[AGENTS[0]])
    finally:
        svc.stop()


# --- durability under memory pressure --------------------------------------------------

CRISIS_BUDGET_MB = 128
CRISES = 2
CALM = 20  # 201s in a row that end a crisis
MAX_WRITES = 3000  # a bound on the crisis loops; a crisis takes about 600 writes
DEADLINE_S = 30.0


def ballast_to(svc: ManagedService, pct: float, ttl_s: float | None) -> None:
    """Ballast that brings pressure to about ``pct`` percent of the budget for ``ttl_s``."""
    s = stats(svc)
    need = int(pct / 100 * s["budget_bytes"] - s["rss_bytes"])
    assert need > MB, f"already at {s['pressure']}%"
    r = post(svc, "/faults/ballast", {"bytes": need, "ttl_s": ttl_s})
    assert r.status_code == 200, r.text


class Writer:
    """Numbered writes to three agents and a namespace; what got 201, what got 503."""

    def __init__(self, svc: ManagedService) -> None:
        self.svc = svc
        self.n = 0
        self.acked: dict[str, list[str]] = {a: [] for a in AGENTS}
        self.acked_docs: set[str] = set()
        self.shed = 0
        self.deadline = time.monotonic() + DEADLINE_S

    def write(self) -> int:
        """One write (every fifth a document); returns its status, 201 or 503."""
        i, self.n = self.n, self.n + 1
        agent = AGENTS[i % len(AGENTS)]
        # Longer than a compaction summary, so a summary kept in place of a turn would show.
        text = f"write {i} by {agent}: " + "a turn long enough to be compacted " * 3
        is_doc = i % 5 == 4
        if is_doc:
            body = {"namespace": "crisis", "doc_id": f"doc-{i}", "text": text}
            r = post(self.svc, "/vectors/documents", body)
        else:
            r = say(self.svc, agent, text)
        if r.status_code == 201:
            if is_doc:
                self.acked_docs.add(f"doc-{i}")
            else:
                self.acked[agent].append(text)
        else:
            assert r.status_code == 503, (r.status_code, r.text)
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["strategy"] == "emergency"
            self.shed += 1
        assert time.monotonic() < self.deadline, f"{self.n} writes, {self.shed} shed"
        return int(r.status_code)

    def until_calm(self) -> int:
        """Write until ``CALM`` 201s in a row; returns how many were shed meanwhile."""
        shed, calm = self.shed, 0
        for _ in range(MAX_WRITES):
            calm = calm + 1 if self.write() == 201 else 0
            if calm >= CALM:
                return self.shed - shed
        pytest.fail(f"no {CALM} writes in a row were accepted within {MAX_WRITES}")


def check_stored(svc: ManagedService, w: Writer) -> None:
    """Exactly the acknowledged writes are stored: in order, whole, all of them, nothing else."""
    assert {a: contents(svc, a) for a in AGENTS} == w.acked
    r = post(svc, "/vectors/search", {"namespace": "crisis", "query": "write", "k": 100})
    assert r.status_code == 200, r.text
    assert {h["doc_id"] for h in r.json()["hits"]} == w.acked_docs


def test_every_201_during_a_memory_crisis_is_stored_and_no_503_is(tmp_path: Path) -> None:
    data = tmp_path / "data"
    svc = start_service(data, "--cycle-interval", "0.2", budget_mb=CRISIS_BUDGET_MB)
    w = Writer(svc)
    try:
        assert post(svc, "/memory/cycle").status_code == 200  # start from a trimmed heap
        warm_up = 45  # 12 turns an agent: more than compaction leaves whole (8)
        assert [w.write() for _ in range(warm_up)] == [201] * warm_up
        for _ in range(CRISES):
            # Aggressive: writes are taken while old turns are compacted in RAM.
            ballast_to(svc, 88, ttl_s=None)
            assert post(svc, "/memory/cycle").json()["strategy"] == "aggressive"
            assert stats(svc)["tiers"]["conversations"]["compacted"] > 0
            assert [w.write() for _ in range(CALM)] == [201] * CALM
            # Emergency: writes are shed until this ballast expires (back to aggressive).
            ballast_to(svc, 99, ttl_s=1.0)
            assert w.until_calm() > 0
            assert post(svc, "/faults/reset", {}).json()["strategy"] == "normal"
        acked = sum(map(len, w.acked.values())) + len(w.acked_docs)
        assert acked + w.shed == w.n and w.shed > 0
        assert stats(svc)["writes_shed"] == w.shed
        check_stored(svc, w)
    finally:
        svc.stop(signal.SIGKILL)
    svc = start_service(data, faults=False)
    try:
        check_stored(svc, w)
    finally:
        svc.stop()
