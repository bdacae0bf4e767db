"""The service's parts wired together, owned by one app (no module state)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from memstress.service.conversations import ConversationMemory
from memstress.service.embedding import EmbeddingCache
from memstress.service.faults import Faults
from memstress.service.manager import Libc, MemoryManager
from memstress.service.metrics import build_registry
from memstress.service.optqueue import OptimizationQueue
from memstress.service.settings import Settings
from memstress.service.store import Store
from memstress.service.vectors import VectorStore


@dataclass
class Runtime:
    settings: Settings
    store: Store
    cache: EmbeddingCache
    conversations: ConversationMemory
    vectors: VectorStore
    faults: Faults
    queue: OptimizationQueue
    manager: MemoryManager
    registry: CollectorRegistry
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def open(cls, settings: Settings, libc: Libc) -> Runtime:
        store = Store(settings.data_dir)
        cache = EmbeddingCache(settings.embedding_cache_bytes)
        conversations = ConversationMemory(store, cache)
        vectors = VectorStore(store, cache)
        faults = Faults()
        queue = OptimizationQueue(settings.queue_size)
        manager = MemoryManager(settings, cache, conversations, vectors, faults, queue, libc)
        return cls(
            settings,
            store,
            cache,
            conversations,
            vectors,
            faults,
            queue,
            manager,
            build_registry(manager),
        )

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def close(self) -> None:
        self.store.close()
