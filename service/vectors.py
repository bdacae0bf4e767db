"""The vector store: one contiguous float32 matrix per namespace, spillable to SQLite.

A resident namespace keeps its vectors in a ``(capacity, 384)`` float32 matrix
that grows by doubling, plus one list slot (doc id, shared between a document's
chunks), one int32 chunk number and one alive flag per row, so a stored vector
costs little more than its 1,536 bytes. Chunk texts stay on disk and are read
for the hits only. A spilled namespace has no RAM but its name and size: its
search streams the vectors from SQLite in batches (or reloads them, when the
manager allows it), so spilling never changes an answer.
"""

from __future__ import annotations

import mmap
import time
from dataclasses import dataclass

import numpy as np

from memstress.service.embedding import DIMS, VECTOR_BYTES, EmbeddingCache, chunk_text
from memstress.service.store import Store

ROW_OVERHEAD = 8 + 4 + 1  # doc id slot, chunk number, alive flag
DOC_OVERHEAD = 160  # doc id string, dict entry, (start, count) tuple
MIN_CAPACITY = 64
HUGE_PAGE = 2 * 1024 * 1024  # smaller matrices cannot span a transparent huge page


def _rows_matrix(capacity: int) -> np.ndarray:
    """An uninitialized ``(capacity, DIMS)`` float32 matrix whose unwritten rows stay off RSS.

    ``np.empty`` asks the kernel for transparent huge pages on big arrays
    (``MADV_HUGEPAGE``), so the first write past the used rows faults in a whole
    2 MiB page: up to 2 MiB of resident slack per namespace that the tier does
    not count (and khugepaged may collapse more). A private anonymous mapping
    without huge pages faults 4 KiB at a time, so the resident part stays the
    written rows the tier accounts, and the mapping is unmapped with the array.
    """
    nbytes = capacity * VECTOR_BYTES
    if nbytes < HUGE_PAGE or not hasattr(mmap, "MAP_PRIVATE"):  # small, or not POSIX
        return np.empty((capacity, DIMS), dtype=np.float32)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(buf, dtype=np.float32).reshape(capacity, DIMS)


@dataclass(frozen=True)
class Hit:
    doc_id: str
    chunk: int
    score: float
    text: str

    def as_json(self) -> dict[str, object]:
        return {"doc_id": self.doc_id, "chunk": self.chunk, "score": self.score, "text": self.text}


class NamespaceIndex:
    """The resident vectors of one namespace."""

    def __init__(self, capacity: int = MIN_CAPACITY) -> None:
        capacity = max(MIN_CAPACITY, capacity)
        self.mat = _rows_matrix(capacity)
        self.chunk_no = np.empty(capacity, dtype=np.int32)
        self.alive = np.zeros(capacity, dtype=bool)
        self.doc_of: list[str] = []
        self.docs: dict[str, tuple[int, int]] = {}  # doc id -> (first row, rows)
        self.n = 0
        self.dead = 0

    @property
    def live(self) -> int:
        return self.n - self.dead

    @property
    def bytes(self) -> int:
        return self.n * (VECTOR_BYTES + ROW_OVERHEAD) + len(self.docs) * DOC_OVERHEAD

    def _reserve(self, extra: int) -> None:
        need = self.n + extra
        cap = self.mat.shape[0]
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        # New rows past n stay untouched, so they cost no resident memory yet.
        mat = _rows_matrix(cap)
        mat[: self.n] = self.mat[: self.n]
        chunk_no = np.empty(cap, dtype=np.int32)
        chunk_no[: self.n] = self.chunk_no[: self.n]
        alive = np.zeros(cap, dtype=bool)
        alive[: self.n] = self.alive[: self.n]
        self.mat, self.chunk_no, self.alive = mat, chunk_no, alive

    def add(self, doc_id: str, chunk_nos: np.ndarray, vecs: np.ndarray) -> None:
        """Append a document's rows, retiring the rows of its previous version."""
        self.remove(doc_id)
        k = len(vecs)
        self._reserve(k)
        a, b = self.n, self.n + k
        self.mat[a:b] = vecs
        self.chunk_no[a:b] = chunk_nos
        self.alive[a:b] = True
        self.doc_of.extend([doc_id] * k)
        self.docs[doc_id] = (a, k)
        self.n = b

    def remove(self, doc_id: str) -> None:
        old = self.docs.pop(doc_id, None)
        if old is None:
            return
        a, k = old
        self.alive[a : a + k] = False
        self.dead += k
        if self.dead > 1024 and self.dead * 4 > self.n:
            self.compact()

    def compact(self) -> None:
        """Rewrite the rows without the retired ones (capacity fitted to the live rows)."""
        keep = np.flatnonzero(self.alive[: self.n])
        fresh = NamespaceIndex(len(keep))
        fresh.mat[: len(keep)] = self.mat[keep]
        fresh.chunk_no[: len(keep)] = self.chunk_no[keep]
        fresh.alive[: len(keep)] = True
        fresh.doc_of = [self.doc_of[i] for i in keep]
        docs: dict[str, tuple[int, int]] = {}
        for row, doc in enumerate(fresh.doc_of):
            start, count = docs.get(doc, (row, 0))
            docs[doc] = (start, count + 1)
        fresh.docs = docs
        fresh.n = len(keep)
        self.__dict__.update(fresh.__dict__)

    def search(self, q: np.ndarray, k: int) -> list[tuple[float, str, int]]:
        if self.live == 0:
            return []
        scores = self.mat[: self.n] @ q
        if self.dead:
            scores[~self.alive[: self.n]] = -np.inf
        rows = _top_k(scores, min(k, self.live))
        return [(float(scores[r]), self.doc_of[r], int(self.chunk_no[r])) for r in rows]


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class VectorStore:
    def __init__(self, store: Store, cache: EmbeddingCache) -> None:
        self.store = store
        self.cache = cache
        self.counts: dict[str, int] = store.namespace_counts()  # stored chunks per namespace
        self.resident: dict[str, NamespaceIndex] = {}
        self.last_used: dict[str, float] = {}
        self.reloads = 0
        self.streamed_searches = 0

    # --- accounting --------------------------------------------------------------

    @property
    def bytes(self) -> int:
        return sum(ix.bytes for ix in self.resident.values())

    @property
    def items(self) -> int:
        return sum(ix.live for ix in self.resident.values())

    @property
    def stored(self) -> int:
        return sum(self.counts.values())

    # --- requests ----------------------------------------------------------------

    def upsert(self, namespace: str, doc_id: str, text: str) -> tuple[int, bool]:
        """Chunk, embed (through the cache) and store a document; (chunks, replaced)."""
        chunks = chunk_text(text)
        vecs = np.stack([self.cache.get(c) for c in chunks])
        old = self.store.put_document(namespace, doc_id, chunks, vecs)  # the commit point
        self.counts[namespace] = self.counts.get(namespace, 0) - old + len(chunks)
        self.last_used[namespace] = time.monotonic()
        ix = self.resident.get(namespace)
        if ix is None and old == 0 and self.counts[namespace] == len(chunks):
            ix = self.resident[namespace] = NamespaceIndex()  # a new namespace starts resident
        if ix is not None:
            ix.add(doc_id, np.arange(len(chunks), dtype=np.int32), vecs)
        return len(chunks), old > 0

    def search(
        self, namespace: str, query: str, k: int, *, may_load: bool
    ) -> tuple[list[Hit], str]:
        """Top-k hits by cosine; raises KeyError for an unknown namespace.

        Returns the hits and where they came from: ``ram``, ``reloaded`` (a spilled
        namespace brought back) or ``disk`` (streamed from SQLite, RAM unchanged).
        """
        if namespace not in self.counts:
            raise KeyError(namespace)
        q = self.cache.get(query)
        self.last_used[namespace] = time.monotonic()
        ix = self.resident.get(namespace)
        source = "ram"
        if ix is None and may_load:
            ix = self.load(namespace)
            source = "reloaded"
        if ix is not None:
            found = ix.search(q, k)
        else:
            found = self._stream_search(namespace, q, k)
            source = "disk"
        texts = self.store.chunk_texts(namespace, [(d, c) for _, d, c in found])
        hits = [Hit(d, c, round(s, 6), texts.get((d, c), "")) for s, d, c in found]
        return hits, source

    def _stream_search(self, namespace: str, q: np.ndarray, k: int) -> list[tuple[float, str, int]]:
        self.streamed_searches += 1
        best: list[tuple[float, str, int]] = []
        for docs, nos, mat in self.store.iter_vectors(namespace):
            scores = mat @ q
            rows = _top_k(scores, min(k, len(scores)))
            best.extend((float(scores[r]), docs[r], int(nos[r])) for r in rows)
            best.sort(key=lambda h: -h[0])
            del best[k:]
        return best

    def load(self, namespace: str) -> NamespaceIndex:
        """Bring a spilled namespace back into RAM from SQLite."""
        ix = NamespaceIndex(self.counts.get(namespace, 0))
        for docs, nos, mat in self.store.iter_vectors(namespace):
            a, b = ix.n, ix.n + len(docs)
            ix._reserve(len(docs))
            ix.mat[a:b] = mat
            ix.chunk_no[a:b] = nos
            ix.alive[a:b] = True
            ix.doc_of.extend(docs)
            ix.n = b
        for row, doc in enumerate(ix.doc_of):
            start, count = ix.docs.get(doc, (row, 0))
            ix.docs[doc] = (start, count + 1)
        self.resident[namespace] = ix
        self.reloads += 1
        return ix

    def delete_namespace(self, namespace: str) -> int:
        """Drop a namespace from disk and RAM; raises KeyError when unknown."""
        if namespace not in self.counts:
            raise KeyError(namespace)
        n = self.store.delete_namespace(namespace)
        self.counts.pop(namespace, None)
        self.resident.pop(namespace, None)
        self.last_used.pop(namespace, None)
        return n

    # --- what the memory manager does --------------------------------------------

    def spill(self, namespace: str) -> int:
        ix = self.resident.pop(namespace, None)
        return ix.bytes if ix is not None else 0

    def _by_age(self) -> list[str]:
        return sorted(self.resident, key=lambda ns: self.last_used.get(ns, 0.0))

    def over(self, limit_bytes: int) -> bool:
        """True when ``trim_to(limit_bytes)`` would spill something."""
        return len(self.resident) > 1 and self.bytes > limit_bytes

    def trim_to(self, limit_bytes: int) -> int:
        """Spill least recently used namespaces until within the limit, never the hottest one."""
        freed = 0
        order = self._by_age()[:-1]
        total = self.bytes
        for ns in order:
            if total <= limit_bytes:
                break
            b = self.spill(ns)
            freed += b
            total -= b
        return freed

    def spill_cold(self) -> int:
        """Spill every namespace but the most recently used one."""
        return sum(self.spill(ns) for ns in self._by_age()[:-1])

    def spill_all(self) -> int:
        return sum(self.spill(ns) for ns in list(self.resident))
