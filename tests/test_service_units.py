"""The service's pure parts on constructed data: embedder, chunking, vectors, queue, budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memstress.common.units import MB
from memstress.service.budget import auto_budget, cgroup_limit
from memstress.service.embedding import CHUNK_CHARS, DIMS, EmbeddingCache, chunk_text, embed
from memstress.service.optqueue import OptimizationQueue
from memstress.service.vectors import NamespaceIndex

ROOT = Path(__file__).resolve().parent.parent


# --- embeddings ------------------------------------------------------------------


def test_embedding_is_a_384_dim_unit_float32_vector() -> None:
    v = embed("Memory pressure rises when the cache grows")
    assert v.shape == (DIMS,)
    assert v.dtype == np.float32
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    assert not np.any(embed("   "))  # nothing to hash: the zero vector, not NaN


def test_embedding_is_the_same_in_another_process_with_another_hash_seed() -> None:
    text = "vectors survive a restart only if the embedder is stable"
    code = (
        "import sys; from service.embedding import embed; "
        f"sys.stdout.buffer.write(embed({text!r}).tobytes())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        timeout=30,
    ).stdout
    assert np.array_equal(np.frombuffer(out, dtype=np.float32), embed(text))


def test_similar_texts_score_higher_than_unrelated_ones() -> None:
    q = embed("how do I reset my password")
    near = embed("password reset instructions for your account")
    far = embed("the weather in lisbon is sunny in july")
    assert float(q @ near) > float(q @ far) + 0.1


def test_chunks_are_bounded_overlapping_and_cover_the_text() -> None:
    words = [f"w{i}" for i in range(1500)]
    text = " ".join(words)
    chunks = chunk_text(text)
    assert len(chunks) > 5
    assert all(len(c) <= CHUNK_CHARS for c in chunks)
    assert set(" ".join(chunks).split()) == set(words)
    assert chunks[0].split()[-1] in chunks[1]  # consecutive chunks overlap
    assert chunk_text("short") == ["short"]
    assert chunk_text("   ") == []


def test_embedding_cache_is_lru_and_bounded_in_bytes() -> None:
    cache = EmbeddingCache(limit_bytes=3 * EmbeddingCache.entry_bytes)
    for t in ("a", "b", "c"):
        cache.get(t)
    cache.get("a")  # a is now the most recently used
    cache.get("d")  # evicts b
    assert len(cache) == 3 and cache.bytes == 3 * EmbeddingCache.entry_bytes
    hits = cache.hits
    cache.get("a")
    assert cache.hits == hits + 1
    misses = cache.misses
    cache.get("b")
    assert cache.misses == misses + 1
    assert cache.set_limit(EmbeddingCache.entry_bytes) == 2 * EmbeddingCache.entry_bytes
    assert len(cache) == 1


# --- vector index ----------------------------------------------------------------


def _vecs(n: int, seed: int) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((n, DIMS)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_index_search_matches_brute_force_after_replacements_and_compaction() -> None:
    ix = NamespaceIndex()
    truth: dict[str, np.ndarray] = {}
    for i in range(300):
        doc = f"d{i % 200}"  # the last 100 replace earlier documents
        vecs = _vecs(1 + i % 7, seed=i)
        ix.add(doc, np.arange(len(vecs), dtype=np.int32), vecs)
        truth[doc] = vecs
    assert ix.live == sum(len(v) for v in truth.values())
    q = _vecs(1, seed=999)[0]
    expect = sorted(
        ((float(v @ q), d, c) for d, m in truth.items() for c, v in enumerate(m)), reverse=True
    )[:10]
    got = ix.search(q, 10)
    assert [(d, c) for _, d, c in got] == [(d, c) for _, d, c in expect]
    ix.compact()
    assert ix.dead == 0 and ix.n == ix.live
    assert [(d, c) for _, d, c in ix.search(q, 10)] == [(d, c) for _, d, c in expect]


def test_index_grows_by_doubling_one_matrix() -> None:
    ix = NamespaceIndex()
    caps = set()
    for i in range(40):
        ix.add(f"d{i}", np.arange(50, dtype=np.int32), _vecs(50, seed=i))
        caps.add(ix.mat.shape[0])
    assert ix.mat.flags["C_CONTIGUOUS"] and ix.mat.dtype == np.float32
    assert sorted(caps) == [64 * 2**k for k in range(len(caps))]
    assert ix.bytes / ix.live < 2000


# --- optimization queue ----------------------------------------------------------


def test_queue_drains_by_priority_then_age_and_coalesces_duplicates() -> None:
    q = OptimizationQueue(capacity=3)
    low = q.submit("low", "a")
    assert low is not None and not low[1]
    again = q.submit("low", "a")
    assert again is not None and again[1] and again[0] is low[0]
    crit = q.submit("critical", "b")
    assert crit is not None and q.position(crit[0]) == 1 and q.position(low[0]) == 2
    assert q.submit("normal", "c") is not None
    assert q.submit("high", "d") is None  # full
    assert q.stats()["rejected"] == 1 and q.stats()["coalesced"] == 1
    order = [r.priority for r in iter(q.pop, None)]
    assert order == ["critical", "normal", "low"]
    with pytest.raises(ValueError, match="valid"):
        q.submit("urgent", "x")


# --- budget ----------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def _proc_self(tmp_path: Path, cgroup: str, mountinfo: str) -> Path:
    """A fake /proc whose ``self`` has the given cgroup and mountinfo files."""
    return _tree(tmp_path / "proc-root", {"self/cgroup": cgroup, "self/mountinfo": mountinfo})


def _v2_mount(point: Path) -> str:
    return f"30 1 0:26 / {point} rw,nosuid - cgroup2 cgroup2 rw\n"


def test_cgroup_v2_limit_of_the_own_cgroup(tmp_path: Path) -> None:
    mnt = tmp_path / "cg2"
    _tree(mnt, {"app/memory.max": f"{300 * MB}\n", "app/memory.current": "1\n"})
    found = cgroup_limit(_proc_self(tmp_path, "0::/app\n", _v2_mount(mnt)))
    assert found is not None and found[0] == 300 * MB and found[1].endswith("app/memory.max")
    b = auto_budget(8192 * MB, found)
    assert b.bytes == 300 * MB and "cgroup v2" in b.source and "300 MB" in b.note


def test_cgroup_v2_a_parents_tighter_limit_binds(tmp_path: Path) -> None:
    # A systemd slice (or a container's outer cgroup) caps the service's own cgroup.
    mnt = tmp_path / "cg2"
    _tree(
        mnt,
        {
            "memory.max": "max\n",
            "slice/memory.max": f"{150 * MB}\n",
            "slice/app/memory.max": f"{300 * MB}\n",
            "slice/app/memory.current": "1\n",
        },
    )
    found = cgroup_limit(_proc_self(tmp_path, "0::/slice/app\n", _v2_mount(mnt)))
    assert found is not None and found[0] == 150 * MB
    assert found[1].endswith("slice/memory.max")


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    mnt = tmp_path / "memory"
    _tree(mnt, {"memory.limit_in_bytes": str(200 * MB), "memory.usage_in_bytes": "1"})
    mountinfo = f"35 31 0:32 / {mnt} rw,relatime - cgroup cgroup rw,memory\n"
    found = cgroup_limit(_proc_self(tmp_path, "4:memory:/\n", mountinfo))
    assert found is not None and found[0] == 200 * MB and "cgroup v1" in found[1]


def test_no_limit_or_a_limit_above_host_ram_falls_back_to_host_ram(tmp_path: Path) -> None:
    mnt = tmp_path / "cg2"
    _tree(mnt, {"memory.max": "max\n", "memory.current": "1\n"})
    assert cgroup_limit(_proc_self(tmp_path, "0::/\n", _v2_mount(mnt))) is None
    big = tmp_path / "big"
    _tree(big, {"memory.max": f"{8192 * MB}\n", "memory.current": "1\n"})
    found = cgroup_limit(_proc_self(big, "0::/\n", _v2_mount(big)))
    assert found is not None and found[0] == 8192 * MB
    b = auto_budget(4096 * MB, found)
    assert b.bytes == 2048 * MB and b.source == "host RAM" and "not below host RAM" in b.note
    b = auto_budget(4096 * MB, cgroup_limit(tmp_path / "nothing"))
    assert b.bytes == 2048 * MB and "no cgroup memory limit" in b.note
