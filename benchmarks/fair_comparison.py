"""The reporting benchmark (issue 3): curves and label-savings tables on biased and balanced
Fashion-MNIST, random and rotation-pretrained starts, the validation-size sweep and the
like-for-like baseline that also trains on the validation labels.

Each part is one run.py command (resumable; parts can run in parallel with --part), then
run_plot.py's report is drawn and the small PNGs are copied into docs/.

    python benchmarks/fair_comparison.py                 # every part, then the report
    python benchmarks/fair_comparison.py --part grid     # only one part (e.g. in a second shell)
    python benchmarks/fair_comparison.py --report-only
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.reporting import load_records  # noqa: E402
from run_plot import report  # noqa: E402

COMMON = ["--dataset", "fashion-mnist", "--runs", "5", "--iterations", "8", "--budget", "125", "--threads", "1", "--quiet"]
PARTS = {
    # rotation-pretrained starts on the issue-2 protocol, and the all-train reference line
    "unsup1": ["--imbalance", "100", "--unsupervised", "1", "--methods", "random,entropy,fk-nn"],
    "all-train": ["--imbalance", "100", "--methods", "all-train"],
    # a balanced pool, both starts
    "balanced": ["--imbalance", "1", "--unsupervised", "0,1", "--methods", "random,entropy,fk-nn"],
    # how FK degrades when the labelled validation set shrinks (baselines re-run: the pool changes too)
    "val10": ["--imbalance", "100", "--val-per-class", "10", "--methods", "random,fk-nn"],
    "val100": ["--imbalance", "100", "--val-per-class", "100", "--methods", "random,entropy,fk-nn"],
    # like-for-like: baselines that also train on the validation labels FK reads (100 per class;
    # 1000 per class would mean training on 10k+ images 8 times per run)
    "trainval": ["--imbalance", "100", "--val-per-class", "100", "--methods", "random,entropy",
                 "--train-on-validation"],
}


def run_part(name: str, out: Path) -> None:
    command = [sys.executable, str(REPO / "run.py"), *COMMON, *PARTS[name], "--out", str(out)]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "local_data" / "bench")
    parser.add_argument("--part", choices=sorted(PARTS), action="append", help="run only these parts")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    if not args.report_only:
        for name in args.part or PARTS:
            run_part(name, args.out)
    if args.part and not args.report_only:
        return
    records = load_records(args.out / "fashion-mnist")
    plots = args.out / "fashion-mnist" / "plots"
    written = report(records, "fashion-mnist", plots, count_validation=False, target=None)
    written += report(records, "fashion-mnist", plots, count_validation=True, target=None)
    args.docs.mkdir(exist_ok=True)
    for path in written:
        if path.suffix in (".png", ".md"):
            shutil.copy(path, args.docs / path.name)
        print(path)


if __name__ == "__main__":
    main()
