"""The command line: ``python -m memstress.service --port P --data-dir D [...]``.

Flags are parsed before the web stack is imported, so a bad flag costs a
fraction of a second and prints one line naming the flag and what is valid
(exit 2). Defaults come from the ``service`` section of the config file.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import NoReturn

from memstress.common.units import MB
from memstress.service.budget import Budget, auto_budget, cgroup_limit
from memstress.service.settings import Settings

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
LOG_DATEFMT = "%Y-%m-%dT%H:%M:%S"
LOG_LEVELS = ("debug", "info", "warning", "error")
BUDGET_MIN_MB = 16
BUDGET_MAX_MB = 1_048_576
MAX_REQUEST_HEAD = 256 * 1024
"""Request line plus headers: a 10,000-character context query is up to 120 kB percent-encoded."""

log = logging.getLogger("service")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the flag and what is valid), exit 2."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message += " (see --help for the valid flags)"
        self.exit(2, f"{self.prog}: error: {message}\n")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (valid: 1 to 65535)")
    return value


def _budget(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not BUDGET_MIN_MB <= value <= BUDGET_MAX_MB:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a budget (valid: MB from {BUDGET_MIN_MB} to {BUDGET_MAX_MB}, or auto)"
        )
    return value


def _bind(text: str) -> str:
    if text == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IP address (valid: 127.0.0.1, ::1, localhost or another local IP)"
        ) from None


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not an interval (valid: 0.05 to 3600 s)")
    return value


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="python -m memstress.service",
        description="The memstress reference memory-management service.",
    )
    p.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    p.add_argument(
        "--data-dir", type=Path, required=True, help="folder of the durable SQLite store"
    )
    p.add_argument(
        "--budget-mb",
        type=_budget,
        default=None,
        metavar="MB|auto",
        help="memory budget; pressure = 100 * RSS / budget (default: service.budget_mb "
        "of the config; auto: the cgroup limit, else half of host RAM)",
    )
    p.add_argument(
        "--enable-faults",
        action="store_true",
        help="serve /faults/* (leak, ballast, reset); without it they answer 404",
    )
    p.add_argument(
        "--bind", type=_bind, default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    p.add_argument(
        "--config", type=Path, default=None, help="config file (default: the shipped one)"
    )
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="default info")
    p.add_argument(
        "--cycle-interval",
        type=_interval,
        default=1.0,
        metavar="S",
        help="seconds between background management cycles (default 1)",
    )
    return p


def resolve_budget(arg: float | str | None, config_mb: float) -> Budget:
    if arg == "auto":
        import psutil

        return auto_budget(psutil.virtual_memory().total, cgroup_limit())
    if arg is None:
        return Budget(int(config_mb * MB), "config")
    return Budget(int(float(arg) * MB), "flag")


def settings_from_args(argv: list[str] | None = None) -> tuple[Settings, Budget]:
    parser = build_parser()
    args = parser.parse_args(argv)
    from memstress.common.config import ConfigError, load_config

    try:
        cfg = load_config(args.config).service
    except ConfigError as exc:
        parser.error(f"argument --config: {exc}")
    budget = resolve_budget(args.budget_mb, cfg.budget_mb)
    settings = Settings(
        data_dir=args.data_dir,
        port=args.port,
        bind=args.bind,
        budget_bytes=budget.bytes,
        budget_source=budget.source,
        enable_faults=args.enable_faults,
        max_body_bytes=cfg.max_body_bytes,
        queue_size=cfg.optimization_queue_size,
        embedding_cache_bytes=int(cfg.embedding_cache_mb * MB),
        conversation_cache_bytes=int(cfg.conversation_cache_mb * MB),
        vector_cache_bytes=int(cfg.vector_cache_mb * MB),
        aggressive_at=cfg.aggressive_at,
        emergency_at=cfg.emergency_at,
        recover_below=cfg.recover_below,
        cycle_interval_s=args.cycle_interval,
        log_level=args.log_level,
        config_source=str(args.config or "the shipped config"),
    )
    return settings, budget


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format=LOG_FORMAT, datefmt=LOG_DATEFMT, stream=sys.stderr, force=True
    )
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(level.upper())


def main(argv: list[str] | None = None) -> int:
    settings, budget = settings_from_args(argv)
    setup_logging(settings.log_level)
    if budget.note:
        log.info("%s", budget.note)
    if not ipaddress.ip_address(settings.bind).is_loopback:
        log.warning("listening on %s: reachable from other machines", settings.bind)

    import uvicorn

    from memstress.service.app import create_app

    app = create_app(settings)
    # uvicorn restores the handlers it found and re-raises the signal it shut down
    # on; these no-op handlers turn that into a normal return, so SIGTERM exits 0.
    stopped_by: list[int] = []

    def _note(sig: int, _frame: FrameType | None) -> None:
        stopped_by.append(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _note)
    uvicorn.run(
        app,
        host=settings.bind,
        port=settings.port,
        workers=1,
        log_config=None,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=5,
        # Longer than any client here idles between requests, so a reused
        # keep-alive connection is not closed under a request in flight.
        timeout_keep_alive=65,
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD,  # h11's default is 16 KiB
    )
    if stopped_by:
        log.info("stopped by %s", signal.Signals(stopped_by[-1]).name)
    return 0
