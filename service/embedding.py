"""Deterministic feature-hashing embeddings, the embedding cache and chunking.

The embedder hashes word tokens (``zlib.crc32``) and character trigrams (a
fixed multiplicative hash over the UTF-8 bytes, vectorized with numpy) into
384 signed buckets and L2-normalizes the sum. Nothing depends on Python's
salted ``hash()``, so a text embeds to the same vector in every process, which
is what lets vectors be stored in SQLite and compared after a restart.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import OrderedDict

import numpy as np

DIMS = 384
VECTOR_BYTES = DIMS * 4  # float32
CHUNK_CHARS = 500
CHUNK_OVERLAP = 100
WORD_WEIGHT = 1.0
TRIGRAM_WEIGHT = 0.5

_WORD = re.compile(r"\w+")
_GOLDEN = np.uint32(0x9E3779B1)
_MURMUR = np.uint32(0x85EBCA6B)
_SIGN_BIT = np.uint32(0x80000000)


def _signed_buckets(hashes: np.ndarray, weight: float) -> np.ndarray:
    buckets = (hashes % np.uint32(DIMS)).astype(np.intp)
    signs = np.where(hashes & _SIGN_BIT, -weight, weight)
    return np.bincount(buckets, weights=signs, minlength=DIMS)


def embed(text: str) -> np.ndarray:
    """The text's 384-dim float32 unit vector (all zeros for text with no characters)."""
    norm = " ".join(text.lower().split())
    acc = np.zeros(DIMS, dtype=np.float64)
    words = _WORD.findall(norm)
    if words:
        hashes = np.fromiter(
            (zlib.crc32(w.encode()) for w in words), dtype=np.uint32, count=len(words)
        )
        acc += _signed_buckets(hashes, WORD_WEIGHT)
    raw = np.frombuffer(f" {norm} ".encode(), dtype=np.uint8).astype(np.uint32)
    if raw.size >= 3:
        h = raw[:-2] | (raw[1:-1] << np.uint32(8)) | (raw[2:] << np.uint32(16))
        h = h * _GOLDEN  # uint32 arithmetic wraps: a stable 32-bit mix
        h ^= h >> np.uint32(15)
        h = h * _MURMUR
        h ^= h >> np.uint32(13)
        acc += _signed_buckets(h, TRIGRAM_WEIGHT)
    norm2 = float(np.sqrt(acc @ acc))
    out = (acc / norm2 if norm2 > 0 else acc).astype(np.float32)
    out.flags.writeable = False
    return out


def chunk_text(text: str, size: int = CHUNK_CHARS, overlap: int = CHUNK_OVERLAP) -> list[str]:
    """Split a long text into ~``size``-char chunks overlapping by ``overlap``, cut at spaces."""
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    chunks: list[str] = []
    start = 0
    n = len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            cut = text.rfind(" ", start + size // 2, end)
            if cut > start:
                end = cut
        piece = text[start:end].strip()
        if piece:
            chunks.append(piece)
        if end >= n:
            break
        # Overlap the next chunk by about ``overlap`` chars, starting on a word.
        nxt = max(end - overlap, start + 1)
        space = text.find(" ", nxt, end)
        start = space + 1 if space != -1 else nxt
    return chunks


CACHE_ENTRY_OVERHEAD = 300
"""Bytes an entry costs beyond its vector: the ndarray header, the 16-byte key, the dict node."""


class EmbeddingCache:
    """An LRU cache text -> vector, bounded in bytes (keys are 16-byte BLAKE2b digests)."""

    entry_bytes = VECTOR_BYTES + CACHE_ENTRY_OVERHEAD

    def __init__(self, limit_bytes: int) -> None:
        self.soft_limit = limit_bytes
        self.limit = limit_bytes  # the effective limit, lowered under pressure
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return len(self._entries) * self.entry_bytes

    def get(self, text: str) -> np.ndarray:
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        vec = self._entries.get(key)
        if vec is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return vec
        self.misses += 1
        vec = embed(text)
        if self.limit >= self.entry_bytes:
            self._entries[key] = vec
            self.trim()
        return vec

    def set_limit(self, limit_bytes: int) -> int:
        """Change the effective limit and trim to it; returns the bytes dropped."""
        self.limit = max(0, limit_bytes)
        return self.trim()

    def trim(self) -> int:
        """Drop least recently used entries until within the limit; returns the bytes dropped."""
        keep = self.limit // self.entry_bytes
        drop = len(self._entries) - keep
        for _ in range(max(0, drop)):
            self._entries.popitem(last=False)
        return max(0, drop) * self.entry_bytes

    def clear(self) -> int:
        dropped = self.bytes
        self._entries.clear()
        return dropped
