"""Checks made before any load is sent, so a doomed run fails in one line, early."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from memstress.common.units import MB

MIN_FREE_MB = 50
"""A run folder of a one-hour run is about 20 MB (samples, Locust history, charts)."""


class PreflightError(ValueError):
    """Something that makes the run impossible; one line naming what and what is valid."""


def check_out_dir(out: Path, min_free_mb: float = MIN_FREE_MB) -> None:
    """``out`` can hold a run: creatable, writable (tried for real) and with room."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreflightError(
            f"--out {out}: cannot create the folder ({exc.strerror}; valid: a writable folder)"
        ) from None
    try:
        # access(2) says yes to root on a read-only bind mount's files; a real write does not.
        with tempfile.NamedTemporaryFile(dir=out, prefix=".memstress-probe-") as fh:
            fh.write(b"x" * 4096)
            fh.flush()
    except OSError as exc:
        raise PreflightError(
            f"--out {out}: not a writable folder ({exc.strerror}; valid: a folder you can write)"
        ) from None
    free_mb = shutil.disk_usage(out).free / MB
    if free_mb < min_free_mb:
        raise PreflightError(
            f"--out {out}: only {free_mb:.1f} MB free "
            f"(valid: a folder with at least {min_free_mb:g} MB free)"
        )
