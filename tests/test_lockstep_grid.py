"""benchmarks/lockstep_grid.py: the same grid through both executors, its report, and one-line errors."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT, assert_one_line_error


def lockstep_grid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/lockstep_grid.py", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600)


def test_both_executors_run_the_grid_and_the_report_compares_them(tmp_path):
    done = lockstep_grid("--dataset", "digits", "--imbalance", "10", "--budget", "10", "--runs", "2",
                         "--iterations", "2", "--epochs", "2", "--methods", "random,entropy", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    report = (tmp_path / "lockstep.md").read_text()
    assert "| local |" in report and "| lockstep |" in report and "(8 records)" in report
    for method in ("random", "entropy"):
        assert f"| {method} | " in report
    assert {p.parent.name for p in (tmp_path / "lockstep").rglob("metrics.jsonl")} == {"random", "entropy"}


def test_bad_input_is_one_line(tmp_path):
    assert "--runs" in assert_one_line_error(lockstep_grid("--runs", "0", "--out", str(tmp_path)))
    unknown = lockstep_grid("--dataset", "digits", "--methods", "nosuch", "--out", str(tmp_path))
    assert "unknown method 'nosuch'" in assert_one_line_error(unknown)
