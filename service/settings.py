"""Everything the service is started with, resolved from the flags and the config file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memstress.common.units import MB


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    port: int = 8000
    bind: str = "127.0.0.1"
    budget_bytes: int = 512 * MB
    budget_source: str = "config"
    enable_faults: bool = False
    max_body_bytes: int = MB
    queue_size: int = 32
    embedding_cache_bytes: int = 64 * MB
    conversation_cache_bytes: int = 64 * MB
    vector_cache_bytes: int = 128 * MB
    aggressive_at: float = 80.0  # pressure thresholds of the strategies (config: service.*)
    emergency_at: float = 95.0
    recover_below: float = 90.0
    cycle_interval_s: float = 1.0
    log_level: str = "info"
    config_source: str = ""
