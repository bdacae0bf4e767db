"""The packages' layering: ``common/`` is the bottom layer and imports none of the others;
the reference service (``service/``) imports only ``common/``, so it runs without the suite.

Read from the source (every import statement, lazy ones inside functions too), so an
import cycle cannot come back hidden in a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ("scenarios", "shapes", "monitors", "reports", "runner", "service")


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
                module = f"{package}.{module}" if module else package
            out.append((node.lineno, module))
    return out


def imports_of(package: str, forbidden: tuple[str, ...]) -> list[str]:
    files = sorted((ROOT / package).glob("*.py"))
    assert files, f"{package}/ has no modules"
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if module.split(".")[0] in forbidden
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
    mod.write_text("def f():\n    from scenarios.registry import names\nfrom . import other\n")
    assert sorted(imported_modules(mod)) == [(2, "scenarios.registry"), (3, "common")]
