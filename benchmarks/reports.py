"""What the experiment benchmarks share: run (unless --report-only), then print the Markdown report and
write it to benchmarks/results/<name>.md."""
from __future__ import annotations

import argparse
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def run_and_report(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], None],
                   report: Callable[[argparse.Namespace], str], name: str) -> None:
    args = parser.parse_args()
    if not args.report_only:
        run(args)
    text = report(args)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)


def run_commands(commands: list[list[str]], workers: int, name: str, cwd: Path) -> None:
    """Run every command, `workers` at a time (each its own process); stop with one line if one fails."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for result in pool.map(lambda command: subprocess.run(command, cwd=cwd), commands):
            if result.returncode:
                raise SystemExit(f"{name}: a run failed ({result.returncode}): {' '.join(result.args)}")


def add_run_arguments(parser: argparse.ArgumentParser, out: Path) -> argparse.ArgumentParser:
    """The flags every seeded, side-by-side benchmark takes: --runs, --workers, --out, --report-only."""
    parser.add_argument("--runs", type=int, default=3, help="seeded runs")
    parser.add_argument("--workers", type=int, default=2, help="run.py processes side by side")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--report-only", action="store_true", help="only print the tables of existing results")
    return parser
