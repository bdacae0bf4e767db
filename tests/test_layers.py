"""The packages' layering: ``common/`` is the bottom layer and imports none of the others;
the reference service (``service/``) imports only ``common/``, so it runs without the suite.
Every import of the suite goes through the one installed package, ``memstress.<folder>``
(see ``memstress/__init__.py``), never a bare ``common`` or ``reports``.

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
    files = sorted((ROOT / package).glob("*.py"))
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
    """Every ``.py`` under root outside hidden folders and ``results/``; ``os.walk`` does
    not enter ``memstress/``'s links to the folders, so each file is seen once."""
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "results"]
        found += [Path(folder, n) for n in names if n.endswith(".py")]
    return found


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
