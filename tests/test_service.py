"""The reference service as a real process: every endpoint of the target API.

Endpoint success and bad input run against this module's ``quiet`` service
(other test files may load the session-wide one); tests that change memory
pressure or kill the process start their own, some on a small budget. Pressure
tests size their ballast from the service's own stats, so they do not depend on
how big the interpreter happens to be.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml

from memstress.common.units import MB
from memstress.runner.service import ManagedService
from tests.conftest import ROOT, start_service

TIMEOUT = 10


def get(svc: ManagedService, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{svc.url}{path}", params=params or None, timeout=TIMEOUT)


def post(svc: ManagedService, path: str, body: Any = None) -> requests.Response:
    return requests.post(f"{svc.url}{path}", json=body, timeout=TIMEOUT)


def delete(svc: ManagedService, path: str) -> requests.Response:
    return requests.delete(f"{svc.url}{path}", timeout=TIMEOUT)


def stats(svc: ManagedService) -> dict[str, Any]:
    r = get(svc, "/memory/stats")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def cycle(svc: ManagedService) -> dict[str, Any]:
    r = post(svc, "/memory/cycle")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def say(svc: ManagedService, agent: str, content: str, role: str = "user") -> requests.Response:
    return post(svc, f"/agents/{agent}/messages", {"role": role, "content": content})


def wait_for(what: str, check: Any, deadline_s: float = 10.0, every_s: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy, or fail at the deadline."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    pytest.fail(f"{what}: not reached within {deadline_s} s (last: {last!r})")


def ballast_to(svc: ManagedService, pct: float, ttl_s: float | None = None) -> dict[str, Any]:
    """Add ballast that brings pressure to about ``pct`` percent of the budget."""
    s = stats(svc)
    need = int(pct / 100 * s["budget_bytes"] - s["rss_bytes"])
    assert need > MB, f"already at {s['pressure']}%, cannot ballast up to {pct}%"
    r = post(svc, "/faults/ballast", {"bytes": need, "ttl_s": ttl_s})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedService]:
    """A service for this module alone, so no other test file's load or faults show here."""
    svc = start_service(tmp_path_factory.mktemp("quiet") / "data")
    yield svc
    svc.stop()


# --- health, stats, cycle, metrics ---------------------------------------------------


def test_health_answers_ok_with_uptime(quiet: ManagedService) -> None:
    r = get(quiet, "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["uptime_s"] > 0


def test_stats_carry_every_contract_field(quiet: ManagedService) -> None:
    s = stats(quiet)
    for key in (
        "rss_bytes",
        "budget_bytes",
        "pressure",
        "strategy",
        "optimizations_total",
        "optimizations_failed",
        "bytes_freed_total",
        "leak_suspected",
        "unaccounted_bytes",
    ):
        assert key in s, key
    assert s["budget_bytes"] == 512 * MB  # the shipped config's quiet.budget_mb
    assert 0 < s["pressure"] < 100 and s["strategy"] == "normal"
    assert s["rss_bytes"] == pytest.approx(psutil.Process(quiet.pid).memory_info().rss, rel=0.1)
    assert set(s["tiers"]) == {"conversations", "vectors", "embedding_cache", "ballast"}
    for tier in s["tiers"].values():
        assert {"items", "bytes", "limit_bytes"} <= set(tier)
    assert s["tiers"]["embedding_cache"]["limit_bytes"] == 64 * MB


def test_cycle_reports_its_work_and_is_fast_without_pressure(quiet: ManagedService) -> None:
    walls, spent = [], []
    for _ in range(30):
        t0 = time.perf_counter()
        body = cycle(quiet)
        walls.append(time.perf_counter() - t0)
        spent.append(body["duration_ms"])
    assert set(body) >= {"duration_ms", "strategy", "pressure", "freed_bytes"}
    assert body["strategy"] == "normal" and body["freed_bytes"] >= 0
    # medians: on a loaded machine any one cycle may be descheduled mid-way
    assert statistics.median(spent) < 50, spent
    assert statistics.median(walls) < 0.1, walls


def test_metrics_expose_process_rss_and_the_managers_gauges(quiet: ManagedService) -> None:
    r = get(quiet, "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    rss = [ln for ln in lines if ln.startswith("process_resident_memory_bytes ")]
    assert rss and float(rss[0].split()[1]) > 10 * MB
    for name in (
        "memstress_memory_pressure ",
        'memstress_strategy{strategy="normal"} 1.0',
        'memstress_tier_bytes{tier="vectors"}',
        'memstress_tier_items{tier="embedding_cache"}',
        'memstress_tier_limit_bytes{tier="conversations"}',
        "memstress_optimizations_total ",
        "memstress_optimizations_failed_total ",
        "memstress_unaccounted_bytes ",
    ):
        assert any(ln.startswith(name) for ln in lines), name


def test_queued_optimization_runs_in_the_background(quiet: ManagedService) -> None:
    before = stats(quiet)
    r = post(quiet, "/memory/optimize", {"priority": "critical", "reason": "background test"})
    assert r.status_code == 202
    body = r.json()
    assert body["request_id"] and body["queue_position"] >= 1
    wait_for(
        "the background cycle drains the request",
        lambda: stats(quiet)["optimizations_total"] > before["optimizations_total"],
    )
    after = stats(quiet)
    assert after["optimization_queue"]["completed"] > before["optimization_queue"]["completed"]
    assert after["optimizations_failed"] == 0


def test_optimize_without_a_body_takes_the_defaults(quiet: ManagedService) -> None:
    r = requests.post(f"{quiet.url}/memory/optimize", timeout=TIMEOUT)
    assert r.status_code == 202 and r.json()["priority"] == "normal"


# --- agents ------------------------------------------------------------------------


def test_messages_are_listed_oldest_first_with_paging(quiet: ManagedService) -> None:
    for i in range(5):
        r = say(quiet, "paging-agent", f"turn number {i}", role="user" if i % 2 else "assistant")
        assert r.status_code == 201, r.text
        assert r.json()["seq"] == i
    r = get(quiet, "/agents/paging-agent/messages", offset=1, limit=2)
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 5
    assert [m["content"] for m in body["messages"]] == ["turn number 1", "turn number 2"]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert get(quiet, "/agents/paging-agent/messages", offset=9).json()["messages"] == []
    fresh = get(quiet, "/agents/nobody-yet/messages").json()
    assert fresh["total"] == 0 and fresh["messages"] == []


def test_context_has_recent_turns_and_the_most_relevant_ones(quiet: ManagedService) -> None:
    agent = "context-agent"
    topics = [
        "the database index makes the orders query fast",
        "my cat likes to sleep on the warm laptop",
        "we deploy the frontend every friday afternoon",
        "the invoice total was wrong by ten euros",
        "lunch today is pasta with tomato sauce",
    ]
    for t in topics:
        assert say(quiet, agent, t).status_code == 201
    r = get(quiet, f"/agents/{agent}/context", query="slow database query index", k=2, recent=2)
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 5
    assert [m["content"] for m in body["recent"]] == topics[-2:]
    assert len(body["relevant"]) == 2
    assert body["relevant"][0]["content"] == topics[0]
    assert body["relevant"][0]["score"] >= body["relevant"][1]["score"]


def test_deleting_an_agent_forgets_it_and_unknown_agents_are_404(quiet: ManagedService) -> None:
    assert say(quiet, "forget-me", "secret").status_code == 201
    r = delete(quiet, "/agents/forget-me")
    assert r.status_code == 200 and r.json()["deleted_messages"] == 1
    assert get(quiet, "/agents/forget-me/messages").json()["total"] == 0
    r = delete(quiet, "/agents/forget-me")
    assert r.status_code == 404 and r.json()["field"] == "agent_id"


# --- vectors -----------------------------------------------------------------------


def _document(topic: str, n: int = 60) -> str:
    return " ".join(f"{topic} sentence {i} about {topic} and its details." for i in range(n))


def test_documents_are_chunked_searched_replaced_and_dropped(quiet: ManagedService) -> None:
    ns = "docs-basic"
    r = post(
        quiet,
        "/vectors/documents",
        {"namespace": ns, "doc_id": "k8s", "text": _document("kubernetes")},
    )
    assert r.status_code == 201, r.text
    assert r.json()["chunks"] >= 5 and r.json()["replaced"] is False
    post(
        quiet,
        "/vectors/documents",
        {"namespace": ns, "doc_id": "bread", "text": _document("sourdough")},
    )
    r = post(quiet, "/vectors/search", {"namespace": ns, "query": "kubernetes details", "k": 3})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert len(hits) == 3 and {h["doc_id"] for h in hits} == {"k8s"}
    assert hits[0]["score"] >= hits[-1]["score"] and "kubernetes" in hits[0]["text"]
    r = post(
        quiet,
        "/vectors/documents",
        {"namespace": ns, "doc_id": "k8s", "text": "tiny kubernetes note"},
    )
    assert r.status_code == 201 and r.json() == {
        "namespace": ns,
        "doc_id": "k8s",
        "chunks": 1,
        "replaced": True,
    }
    hits = post(quiet, "/vectors/search", {"namespace": ns, "query": "kubernetes", "k": 50}).json()[
        "hits"
    ]
    assert [h["chunk"] for h in hits if h["doc_id"] == "k8s"] == [0]  # old chunks are gone
    r = delete(quiet, f"/vectors/namespaces/{ns}")
    assert r.status_code == 200 and r.json()["deleted_chunks"] > 5
    r = post(quiet, "/vectors/search", {"namespace": ns, "query": "kubernetes"})
    assert r.status_code == 404 and r.json()["field"] == "namespace"
    assert delete(quiet, f"/vectors/namespaces/{ns}").status_code == 404


# --- bad input -----------------------------------------------------------------------

BAD_INPUT = [
    ("post", "/agents/a1/messages", {"role": "robot", "content": "x"}, "role"),
    ("post", "/agents/a1/messages", {"role": "user"}, "content"),
    ("post", "/agents/a1/messages", {"role": "user", "content": ""}, "content"),
    ("post", "/agents/bad%20id/messages", {"role": "user", "content": "x"}, "agent_id"),
    ("get", "/agents/a1/messages?offset=-1", None, "offset"),
    ("get", "/agents/a1/messages?limit=0", None, "limit"),
    ("get", "/agents/a1/context?k=many", None, "k"),
    ("post", "/vectors/documents", {"doc_id": "d", "text": "t"}, "namespace"),
    ("post", "/vectors/documents", {"namespace": "n", "doc_id": "d", "text": "   "}, "text"),
    ("post", "/vectors/documents", {"namespace": "n/x", "doc_id": "d", "text": "t"}, "namespace"),
    ("post", "/vectors/search", {"namespace": "n", "query": "q", "k": 0}, "k"),
    ("post", "/vectors/search", {"namespace": "n", "k": 3}, "query"),
    ("post", "/memory/optimize", {"priority": "urgent"}, "priority"),
    ("post", "/faults/leak", {"bytes": -1}, "bytes"),
    ("post", "/faults/leak", {"bytes": "lots"}, "bytes"),
    ("post", "/faults/ballast", {"bytes": MB, "ttl_s": -5}, "ttl_s"),
    ("post", "/faults/ballast", {"bytes": 10**15}, "bytes"),  # over the 4 x budget cap
]


@pytest.mark.parametrize(("method", "path", "body", "field"), BAD_INPUT)
def test_bad_input_gets_422_naming_the_field(
    quiet: ManagedService, method: str, path: str, body: Any, field: str
) -> None:
    r = requests.request(method, f"{quiet.url}{path}", json=body, timeout=TIMEOUT)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["field"] == field and field in err["error"]


def test_a_body_that_is_not_json_gets_422_naming_the_body(quiet: ManagedService) -> None:
    r = requests.post(
        f"{quiet.url}/vectors/search",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 422 and r.json()["field"] == "body"


def test_fault_memory_over_the_caps_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "data", budget_mb=16)
    try:
        r = post(svc, "/faults/leak", {"bytes": 2 * 16 * MB + 1})
        assert r.status_code == 422 and r.json()["field"] == "bytes"
        assert "2 x budget" in r.json()["error"]
        for _ in range(2):
            assert post(svc, "/faults/ballast", {"bytes": 30 * MB}).status_code == 200
        r = post(svc, "/faults/ballast", {"bytes": 5 * MB})  # 65 MB > 4 x 16 MB
        assert r.status_code == 422 and r.json()["field"] == "bytes"
        assert "4 x budget" in r.json()["error"]
        ballast = stats(svc)["tiers"]["ballast"]
        assert ballast["items"] == 2 and ballast["bytes"] == 60 * MB
        assert ballast["limit_bytes"] == 64 * MB
    finally:
        svc.stop()


def test_oversized_bodies_get_413_and_store_nothing(quiet: ManagedService) -> None:
    big = "x" * (1024 * 1024 + 10)
    r = post(quiet, "/vectors/documents", {"namespace": "too-big", "doc_id": "d", "text": big})
    assert r.status_code == 413 and r.json()["field"] == "body"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the streamed size is what counts
        yield b'{"role": "user", "content": "'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"}'

    r = requests.post(
        f"{quiet.url}/agents/too-big/messages",
        data=chunked(),
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 413
    assert post(quiet, "/vectors/search", {"namespace": "too-big", "query": "x"}).status_code == 404
    assert get(quiet, "/agents/too-big/messages").json()["total"] == 0


# --- process behaviour -------------------------------------------------------------


def test_binds_loopback_by_default(quiet: ManagedService) -> None:
    listening = [
        c.laddr
        for c in psutil.Process(quiet.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
    assert any(addr.port == quiet.port for addr in listening)


def test_faults_are_404_without_the_flag(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "data", faults=False)
    try:
        for path, body in (
            ("/faults/leak", {"bytes": MB}),
            ("/faults/ballast", {"bytes": MB, "ttl_s": 1}),
            ("/faults/reset", {}),
        ):
            assert post(svc, path, body).status_code == 404, path
        assert stats(svc)["tiers"]["ballast"]["items"] == 0
    finally:
        svc.stop()


def test_sigterm_exits_0_and_closes_sqlite(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "data")
    assert say(svc, "a", "hello").status_code == 201
    assert (svc.data_dir / "memstress.db-wal").exists()  # WAL mode, while open
    assert svc.stop(signal.SIGTERM) == 0
    log = svc.log()
    assert "sqlite closed" in log and "Traceback" not in log
    assert not (svc.data_dir / "memstress.db-wal").exists()  # checkpointed and closed cleanly


def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    svc = start_service(data)
    acked: dict[str, list[str]] = {f"agent-{i}": [] for i in range(3)}
    try:
        r = post(
            svc,
            "/vectors/documents",
            {"namespace": "durable", "doc_id": "manual", "text": _document("durability")},
        )
        assert r.status_code == 201
        for i in range(300):
            agent = f"agent-{i % 3}"
            content = f"message {i} for {agent}"
            assert say(svc, agent, content).status_code == 201
            acked[agent].append(content)
    finally:
        assert svc.stop(signal.SIGKILL) == -signal.SIGKILL  # no shutdown code ran
    svc = start_service(data)
    try:
        for agent, contents in acked.items():
            body = get(svc, f"/agents/{agent}/messages", limit=1000).json()
            assert body["total"] == len(contents)
            assert [m["content"] for m in body["messages"]] == contents
        r = post(svc, "/vectors/search", {"namespace": "durable", "query": "durability details"})
        assert r.status_code == 200 and r.json()["hits"][0]["doc_id"] == "manual"
    finally:
        svc.stop()


# --- optimization queue -----------------------------------------------------------------


def config_copy(tmp_path: Path, **service: float) -> Path:
    """The shipped config with some ``service`` keys changed, as a file."""
    cfg = yaml.safe_load((ROOT / "stress_test_config.yml").read_text())
    cfg["service"].update(service)
    path = tmp_path / "service-config.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_full_optimization_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    cfg_path = config_copy(tmp_path, optimization_queue_size=2)
    # A long cycle interval: nothing drains the queue while the test fills it.
    svc = start_service(tmp_path / "data", "--config", str(cfg_path), "--cycle-interval", "600")
    try:
        first = post(svc, "/memory/optimize", {"priority": "low", "reason": "cache"})
        assert first.status_code == 202 and first.json()["queue_position"] == 1
        same = post(svc, "/memory/optimize", {"priority": "low", "reason": "cache"})
        assert same.status_code == 202
        assert same.json()["request_id"] == first.json()["request_id"] and same.json()["coalesced"]
        urgent = post(svc, "/memory/optimize", {"priority": "critical", "reason": "spike"})
        assert urgent.status_code == 202 and urgent.json()["queue_position"] == 1
        full = post(svc, "/memory/optimize", {"priority": "high", "reason": "another"})
        assert full.status_code == 429
        assert int(full.headers["Retry-After"]) >= 1
        assert "full" in full.json()["error"]
        q = stats(svc)["optimization_queue"]
        assert q == q | {"length": 2, "capacity": 2, "coalesced": 1, "rejected": 1}
    finally:
        svc.stop()


# --- strategies under pressure -------------------------------------------------------------


def test_normal_cycles_trim_tiers_to_their_soft_limits(tmp_path: Path) -> None:
    # Soft limits of about 50 kB: a few dozen vectors or turns.
    cfg_path = config_copy(tmp_path, vector_cache_mb=0.05, conversation_cache_mb=0.05)
    svc = start_service(tmp_path / "data", "--config", str(cfg_path), "--cycle-interval", "600")
    try:
        r = post(
            svc,
            "/vectors/documents",
            {"namespace": "only", "doc_id": "d", "text": _document("solo", 400)},
        )
        assert r.status_code == 201 and r.json()["chunks"] > 35
        c = cycle(svc)
        # One namespace over the limit is the hottest one: nothing to spill, no optimization.
        assert c["strategy"] == "normal" and c["optimized"] is False
        assert stats(svc)["tiers"]["vectors"]["resident_namespaces"] == 1

        post(
            svc,
            "/vectors/documents",
            {"namespace": "other", "doc_id": "d", "text": _document("duo", 400)},
        )
        first = post(svc, "/vectors/search", {"namespace": "other", "query": "duo details"}).json()
        assert post(svc, "/vectors/search", {"namespace": "only", "query": "x"}).status_code == 200
        turns = {
            f"chatty-{a}": [f"{a}/{i} " + "words to fill the turn " * 12 for i in range(20)]
            for a in range(3)
        }
        for agent, contents in turns.items():
            for t in contents:
                assert say(svc, agent, t).status_code == 201
        before = stats(svc)["tiers"]
        assert before["conversations"]["bytes"] > 50_000 and before["conversations"]["agents"] == 3

        c = cycle(svc)
        assert c["strategy"] == "normal" and c["optimized"] is True
        after = stats(svc)["tiers"]
        assert after["vectors"]["resident_namespaces"] == 1  # "other" was the colder one
        assert after["conversations"]["bytes"] <= after["conversations"]["limit_bytes"]
        assert after["conversations"]["agents"] < 3
        # Trimmed data is still all there: read through to disk, reloaded on demand.
        for agent, contents in turns.items():
            body = get(svc, f"/agents/{agent}/messages", limit=100).json()
            assert [m["content"] for m in body["messages"]] == contents
        again = post(svc, "/vectors/search", {"namespace": "other", "query": "duo details"}).json()
        assert again["source"] == "reloaded" and again["hits"] == first["hits"]
    finally:
        svc.stop()


def test_ballast_drives_aggressive_then_emergency_and_back(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "data", "--cycle-interval", "0.2", budget_mb=128)
    try:
        long_turns = [
            f"turn {i}: " + "a long conversation turn with detail " * 8 for i in range(20)
        ]
        for t in long_turns:
            assert say(svc, "talker", t).status_code == 201
        for ns in ("cold-ns", "hot-ns"):
            r = post(
                svc,
                "/vectors/documents",
                {"namespace": ns, "doc_id": "d", "text": _document(ns, 30)},
            )
            assert r.status_code == 201
        cold_hits = post(
            svc, "/vectors/search", {"namespace": "cold-ns", "query": "cold-ns details"}
        ).json()
        assert (
            post(svc, "/vectors/search", {"namespace": "hot-ns", "query": "x"}).status_code == 200
        )
        cycle(svc)  # settle: start from a trimmed heap
        assert stats(svc)["tiers"]["vectors"]["resident_namespaces"] == 2

        # Past 80%: aggressive. Writes still go through; old turns are compacted, cold
        # vectors spilled, and reads still see the full data.
        ballast_to(svc, 88)
        c = cycle(svc)
        assert c["strategy"] == "aggressive" and 80 <= c["pressure"] < 95
        h = get(svc, "/health")
        assert h.status_code == 200 and h.json()["status"] == "degraded"
        s = stats(svc)
        assert s["tiers"]["conversations"]["compacted"] > 0
        assert s["tiers"]["vectors"]["resident_namespaces"] == 1
        assert s["tiers"]["embedding_cache"]["limit_bytes"] == 16 * MB  # shrunk to a quarter
        full = get(svc, "/agents/talker/messages", limit=100).json()
        assert [m["content"] for m in full["messages"]] == long_turns
        again = post(
            svc, "/vectors/search", {"namespace": "cold-ns", "query": "cold-ns details"}
        ).json()
        assert again["source"] == "disk" and again["hits"] == cold_hits["hits"]
        assert say(svc, "talker", "still writable").status_code == 201

        # Past 95%: emergency. Writes are shed with Retry-After, health is critical,
        # caches are dropped, fault instruments still answer.
        ballast_to(svc, 99)
        c = cycle(svc)
        assert c["strategy"] == "emergency"
        h = get(svc, "/health")
        assert h.status_code == 503 and h.json()["status"] == "critical"
        for r in (
            say(svc, "talker", "shed me"),
            post(svc, "/vectors/documents", {"namespace": "hot-ns", "doc_id": "e", "text": "shed"}),
        ):
            assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        s = stats(svc)
        assert s["tiers"]["embedding_cache"]["items"] == 0
        assert s["tiers"]["conversations"]["items"] == 0
        assert s["tiers"]["vectors"]["resident_namespaces"] == 0
        assert get(svc, "/agents/talker/messages").json()["total"] == 21  # nothing shed was kept
        assert (
            post(svc, "/vectors/search", {"namespace": "hot-ns", "query": "x"}).status_code == 200
        )
        assert post(svc, "/faults/ballast", {"bytes": 4096, "ttl_s": 1}).status_code == 200

        # Reset: under 90% again, writes accepted.
        r = post(svc, "/faults/reset", {})
        assert r.status_code == 200 and r.json()["pressure"] < 90
        assert say(svc, "talker", "back in business").status_code == 201

        # Ballast that expires: the background cycle releases it and writes resume.
        ballast_to(svc, 99, ttl_s=1.0)
        assert say(svc, "talker", "shed again").status_code == 503
        wait_for(
            "expired ballast released",
            lambda: say(svc, "talker", "after expiry").status_code == 201,
        )
        s = stats(svc)
        assert s["tiers"]["ballast"]["items"] == 0 and s["pressure"] < 90
        assert s["optimizations_total"] > 0 and s["optimizations_failed"] == 0
        assert s["bytes_freed_total"] > 0
    finally:
        svc.stop()


@pytest.mark.parametrize(
    ("thresholds", "strategy", "health", "write_status"),
    [
        ({"aggressive_at": 1, "recover_below": 1.5, "emergency_at": 1000}, "aggressive", 200, 201),
        ({"aggressive_at": 1, "recover_below": 1.5, "emergency_at": 2}, "emergency", 503, 503),
    ],
    ids=["aggressive", "emergency"],
)
def test_the_strategy_thresholds_come_from_the_config(
    tmp_path: Path, thresholds: dict[str, float], strategy: str, health: int, write_status: int
) -> None:
    # An idle service sits at a few percent of its budget: with the shipped thresholds
    # (80, 95) it is normal; with these it is not.
    cfg_path = config_copy(tmp_path, **thresholds)
    svc = start_service(tmp_path / "data", "--config", str(cfg_path), "--cycle-interval", "600")
    try:
        c = cycle(svc)
        assert c["strategy"] == strategy and 2 < c["pressure"] < 80, c
        assert get(svc, "/health").status_code == health
        assert say(svc, "a1", "hello").status_code == write_status
    finally:
        svc.stop()


def test_a_leak_is_unaccounted_and_suspected_while_ballast_is_neither(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "data")
    try:
        cycle(svc)
        base = stats(svc)

        r = post(svc, "/faults/ballast", {"bytes": 50 * MB})
        assert r.status_code == 200
        cycle(svc)
        s = stats(svc)
        assert s["rss_bytes"] - base["rss_bytes"] >= 45 * MB  # ballast is really resident
        assert s["tiers"]["ballast"]["bytes"] == 50 * MB
        assert s["unaccounted_bytes"] - base["unaccounted_bytes"] < 16 * MB
        assert s["leak_suspected"] is False

        r = post(svc, "/faults/reset", {})
        assert r.json()["released_ballast_bytes"] == 50 * MB
        assert stats(svc)["rss_bytes"] - base["rss_bytes"] < 10 * MB  # and releasable

        for _ in range(5):
            assert post(svc, "/faults/leak", {"bytes": 10 * MB}).status_code == 200
            cycle(svc)
        s = stats(svc)
        assert s["rss_bytes"] - base["rss_bytes"] >= 45 * MB
        assert s["unaccounted_bytes"] - base["unaccounted_bytes"] >= 40 * MB
        assert s["leak_suspected"] is True
        assert s["tiers"]["ballast"]["bytes"] == 0
    finally:
        svc.stop()


# --- command line --------------------------------------------------------------------------


def test_budget_auto_starts_and_explains_itself(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "data", "--budget-mb", "auto")
    try:
        assert stats(svc)["budget_bytes"] > 16 * MB
        assert "budget auto:" in svc.log()
    finally:
        svc.stop()
