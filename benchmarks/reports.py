"""What the experiment benchmarks share: run (unless --report-only), then print the Markdown report and
write it to benchmarks/results/<name>.md."""
from __future__ import annotations

import argparse
from collections.abc import Callable
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
