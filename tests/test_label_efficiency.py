"""benchmarks/label_efficiency.py: the grid through run.py, then its report: accuracy per labelled count, AUBC and
the pairwise win matrix on pool labels (every method is handed the same validation set)."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT


def test_the_report_holds_the_curves_aubc_and_the_win_matrix(tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/label_efficiency.py", "--dataset", "digits", "--imbalance", "10", "--runs", "2",
         "--iterations", "2", "--budget", "10", "--epochs", "1", "--methods", "random,fk-nn", "--val-per-class", "20",
         "--out", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = (tmp_path / "label_efficiency_digits.md").read_text()
    assert "| labelled: test acc | random | fk-nn |" in report and "| 20 | " in report
    assert "| runs | 2 | 2 |" in report
    # fk-nn read 200 validation labels, random none: compared on pool labels they meet at both counts
    assert "AUBC of test accuracy (normalised area under the budget curve, 10 to 20 labels, pool labels counted" in report
    matrix = report.split("Pairwise wins on test accuracy")[1].split("AUBC")[0]
    assert "| fk-nn | - | " in matrix and "/2 |" in matrix
