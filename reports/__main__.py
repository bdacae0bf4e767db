"""``python -m memstress.reports build|compare|analyze``: rebuild, compare and analyse results.

Exit codes: ``build`` and ``analyze`` the verdict's (0 passed, 1 failed, or a
stop code the run recorded); ``compare`` 1 on a regression, else 0; every
command 2 on bad input, with one line naming what is wrong and what is valid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from memstress.common.config import GRADES, Config, ConfigError, load_config
from memstress.common.exitcodes import ExitCode
from memstress.reports.analyze import analyze
from memstress.reports.build import build_run_report, build_session_report, session_runs
from memstress.reports.collect import ReportInputError, is_run_folder
from memstress.reports.compare import compare, load_side, render
from memstress.reports.grading import parse_grade

PROG = "python -m memstress.reports"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _grade(text: str) -> str:
    try:
        return parse_grade(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Rebuild, compare and analyse memstress results.",
        epilog="Exit codes: build/analyze the verdict's (0 passed, 1 failed, or the stop code "
        "the run recorded: 3, 4, 130); compare 1 on a regression, else 0; 2 on bad input.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config", type=Path, metavar="FILE", help="config file (default: the shipped one)"
        )

    b = sub.add_parser("build", help="rebuild JSON, Markdown and charts of a run or session folder")
    b.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder or a session folder")
    common(b)
    b.add_argument(
        "--fail-on",
        type=_grade,
        metavar="GRADE",
        help=f"fail on grades below this one (one of: {', '.join(GRADES)}; default: the config's)",
    )

    c = sub.add_parser("compare", help="metric deltas and regressions between two runs")
    c.add_argument(
        "old", type=Path, metavar="OLD", help="run folder, session folder or results JSON"
    )
    c.add_argument(
        "new", type=Path, metavar="NEW", help="run folder, session folder or results JSON"
    )
    common(c)

    a = sub.add_parser("analyze", help="the threshold report of any Locust CSV export")
    a.add_argument(
        "prefix", type=Path, metavar="PREFIX", help="the --csv prefix (PREFIX_stats.csv)"
    )
    common(a)
    a.add_argument("--fail-on", type=_grade, metavar="GRADE", help=f"one of: {', '.join(GRADES)}")
    a.add_argument(
        "--out", type=Path, metavar="DIR", help="also write JSON, Markdown and charts here"
    )
    return p


def _build(args: argparse.Namespace, cfg: Config) -> int:
    path: Path = args.run_dir
    if not path.is_dir():
        raise ReportInputError(f"{path}: no such folder (valid: a run folder or a session folder)")
    if is_run_folder(path):
        rep = build_run_report(path, cfg, args.fail_on)
        scenario = rep.results["run"].get("scenario", "run")
        word = "passed" if rep.results["verdict"]["passed"] else "FAILED"
        partial = ", partial" if rep.partial else ""
        print(
            f"{scenario}: grade {rep.overall_grade}, verdict {word}{partial}, "
            f"exit {rep.exit_code} -> {rep.report_path}"
        )
        return rep.exit_code
    runs = session_runs(path)
    if not runs:
        raise ReportInputError(
            f"{path}: not a run folder and holds no run folders (valid: a folder with "
            "run_meta.json, stages.csv, memory_samples.csv or locust_stats.csv, "
            "or a folder of those)"
        )
    srep = build_session_report(path, runs, cfg, args.fail_on)
    for r in srep.results["runs"]:
        print(
            f"{r['scenario']}: grade {r['overall_grade']}, exit {r['exit_code']} -> {r['report']}"
        )
    print(f"session: grade {srep.overall_grade}, exit {srep.exit_code} -> {srep.report_path}")
    return srep.exit_code


def _compare(args: argparse.Namespace, cfg: Config) -> int:
    old, new = load_side(args.old, cfg), load_side(args.new, cfg)
    result = compare(old, new, cfg)
    if not result.deltas:
        raise ReportInputError(
            f"{args.old} and {args.new} have no scenario in common "
            f"(old: {', '.join(old) or 'none'}; new: {', '.join(new) or 'none'})"
        )
    print(render(result, args.old, args.new), end="")
    return result.exit_code


def _analyze(args: argparse.Namespace, cfg: Config) -> int:
    res = analyze(args.prefix, cfg, args.fail_on, args.out)
    print(res.markdown, end="")
    return res.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        handler = {"build": _build, "compare": _compare, "analyze": _analyze}[args.command]
        return handler(args, cfg)
    except (ConfigError, ReportInputError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE


if __name__ == "__main__":
    sys.exit(main())
