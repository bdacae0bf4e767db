"""The packages' layering: ``common/`` is the bottom layer and imports nothing else of the
suite; the reference service (``service/``) imports only ``common/``, so it runs without the
suite. Every import of the suite goes through the one installed package,
``memstress.<folder>`` (see ``memstress/__init__.py``), never a bare ``common`` or ``reports``.
And no module outside ``tests/`` and ``bench/`` is over :data:`MAX_LINES` lines: one concern
per module, as docs/design.md maps them.

Read from the source (every import statement, lazy ones inside functions too), so an
import cycle cannot come back hidden in a function body.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ("scenarios", "shapes", "monitors", "reports", "runner", "service")
FOLDERS = ("common", *SUITE)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in a file (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = path.parent.name
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = f"memstress.{package}.{module}" if module else f"memstress.{package}"
            out.append((node.lineno, module))
    return out


def folder_of(module: str) -> str | None:
    """The suite folder a ``memstress.<folder>...`` module lives in, else None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "memstress" else None


def imports_of(package: str, forbidden: tuple[str, ...]) -> list[str]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if folder_of(module) in forbidden
    ]


def test_common_imports_none_of_the_suites_other_packages() -> None:
    bad = imports_of("common", SUITE)
    assert not bad, "; ".join(bad)


def test_common_imports_nothing_of_memstress_but_common() -> None:
    """Not the plugin, not ``memstress.attach`` either: only ``memstress.common``."""
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / "common").rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] == "memstress" and folder_of(module) != "common"
    ]
    assert not bad, "; ".join(bad)


def test_the_service_imports_only_common_of_the_suite() -> None:
    bad = imports_of("service", tuple(p for p in SUITE if p != "service"))
    assert not bad, "; ".join(bad)


def test_the_scan_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "common"
    pkg.mkdir()
    mod = pkg / "m.py"
    mod.write_text(
        "def f():\n    from memstress.scenarios.registry import names\nfrom . import other\n"
    )
    assert sorted(imported_modules(mod)) == [
        (2, "memstress.scenarios.registry"),
        (3, "memstress.common"),
    ]
    assert imports_of_file(mod, SUITE) == ["m.py:2 imports memstress.scenarios.registry"]


def imports_of_file(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.name}:{line} imports {module}"
        for line, module in imported_modules(path)
        if folder_of(module) in forbidden
    ]


def python_files(root: Path) -> list[Path]:
    """Every ``.py`` under root outside hidden folders and what the checkout ignores
    (``results/``, a wheel build's ``build/`` and ``*.egg-info``); ``os.walk`` does not
    enter ``memstress/``'s links to the folders, so each file is seen once."""
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not _ignored(d)]
        found += [Path(folder, n) for n in names if n.endswith(".py")]
    return found


def _ignored(folder: str) -> bool:
    return folder in ("results", "build", "__pycache__") or folder.endswith(".egg-info")


def test_no_file_imports_a_suite_folder_by_its_bare_name() -> None:
    """``from common.config import ...`` would load a second copy of the module (as
    ``common.config`` beside ``memstress.common.config``) in a checkout, and fail once
    installed, where only ``memstress`` is on the path."""
    tracked = python_files(ROOT)
    assert len(tracked) > 100
    bare = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in tracked
        for line, module in imported_modules(path)
        if module.split(".")[0] in FOLDERS
    ]
    assert not bare, "; ".join(bare[:10])


MAX_LINES = 600
"""The most lines a module outside ``tests/`` and ``bench/`` may have."""

SPLIT_PENDING: dict[str, str] = {}
"""Modules still over :data:`MAX_LINES`, each with why; an entry goes once its module is split."""


def module_lines(root: Path) -> dict[str, int]:
    """Lines of every module outside ``tests/`` and ``bench/``, by path from ``root``."""
    out = {}
    for path in python_files(root):
        rel = path.relative_to(root)
        if rel.parts[0] in ("tests", "bench"):
            continue
        out[rel.as_posix()] = len(path.read_text(encoding="utf-8").splitlines())
    return out


def test_no_module_outside_tests_and_bench_is_over_600_lines() -> None:
    lines = module_lines(ROOT)
    assert "monitors/monitor.py" in lines and "run_stress_test.py" in lines
    assert not any(p.startswith(("tests/", "bench/")) for p in lines)
    over = {p: n for p, n in lines.items() if n > MAX_LINES and p not in SPLIT_PENDING}
    assert not over, "; ".join(
        f"{p}: {n} lines (valid: up to {MAX_LINES}; split it by concern)"
        for p, n in sorted(over.items())
    )


def test_every_module_pending_a_split_is_still_over_the_limit() -> None:
    """An entry of :data:`SPLIT_PENDING` whose module is split (or gone) is removed."""
    lines = module_lines(ROOT)
    done = [p for p in SPLIT_PENDING if lines.get(p, 0) <= MAX_LINES]
    assert not done, f"remove from SPLIT_PENDING, now within {MAX_LINES} lines: {done}"


def test_the_line_count_sees_a_long_module_and_skips_tests(tmp_path: Path) -> None:
    long = "x = 1\n" * (MAX_LINES + 1)
    for rel in ("pkg/long.py", "tests/long_test.py", "bench/long_bench.py", ".venv/x.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(long)
    (tmp_path / "pkg" / "short.py").write_text("x = 1\n" * MAX_LINES)
    assert module_lines(tmp_path) == {"pkg/long.py": MAX_LINES + 1, "pkg/short.py": MAX_LINES}
