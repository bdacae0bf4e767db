"""Units the suite counts in, spelled once.

A megabyte here is 2**20 bytes everywhere: in the config (``budget_mb``,
``leak_rate_mb_per_min``), the reference service's accounting, the monitor's
leak slope and the reports. The reference service imports this too; ``common``
imports nothing of the suite, so the service stays importable on its own.
"""

from __future__ import annotations

MB = 1 << 20
"""Bytes in a megabyte (a mebibyte)."""
