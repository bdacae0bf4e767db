"""Start and stop the bundled reference service for one run."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from common.config import ROOT
from common.target import TargetClient, TargetError

log = logging.getLogger("memstress")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment for a child on loopback (benchmarks, tests): no proxies, none of
    the suite's own ``MEMSTRESS_*``/``LOCUST_*`` options, unbuffered output; plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MEMSTRESS_", "LOCUST_")) and "proxy" not in k.lower()
    }
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class ManagedService:
    """A ``python -m service`` child: faults on, data dir and log in the run folder."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(
        cls, run_dir: Path, config_path: Path, budget_mb: str | None = None, timeout: float = 60
    ) -> ManagedService:
        port = free_port()
        log_path = run_dir / "service.log"
        args = [
            sys.executable,
            "-m",
            "service",
            "--port",
            str(port),
            "--data-dir",
            str(run_dir / "service-data"),
            "--enable-faults",
            "--config",
            str(config_path),
        ]
        if budget_mb:
            args += ["--budget-mb", budget_mb]
        with open(log_path, "ab") as fh:
            # Its own session: a Ctrl-C in the terminal reaches us, and we stop it in order.
            proc = subprocess.Popen(
                args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        svc = cls(proc, f"http://127.0.0.1:{port}", log_path)
        client = TargetClient(svc.url, timeout=1.0)
        try:
            client.wait_healthy(timeout)
        except TargetError as exc:
            code = proc.poll()
            svc.stop()
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            if code is not None:
                raise TargetError(
                    f"reference service exited with code {code}: {tail[0]} (see {log_path})"
                ) from None
            raise TargetError(f"reference service: {exc} (see {log_path})") from None
        finally:
            client.close()
        log.info("reference service pid %d on %s (log %s)", proc.pid, svc.url, log_path)
        return svc

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("reference service did not stop in %g s; killing it", timeout)
                self.proc.kill()
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        return self.proc.returncode
