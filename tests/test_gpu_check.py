"""benchmarks/gpu_check.py runs every section on the CPU at tiny sizes (on a GPU: --device cuda, five minutes),
so the check a lent GPU would run cannot rot unseen."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT


def test_the_gpu_check_runs_every_section_on_the_cpu(tmp_path):
    report = tmp_path / "gpu.md"
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--work",
                           str(tmp_path / "work"), "--out", str(report)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = report.read_text()
    for section in ("strategies", "descriptors", "matching", "grid", "bf16", "batched"):
        assert f"## {section} (" in text
    assert "FAILED" not in text
    methods = [line.split("|")[1].strip() for line in text.split("## strategies")[1].split("##")[0].splitlines()
               if line.startswith("| ") and not line.startswith("| method")]
    assert sorted(methods) == sorted("random,entropy,var-ratio-mc,coreset,badge,vaal,fk-nn,fk-cov".split(","))
    matching = [line for line in text.split("## matching")[1].split("##")[0].splitlines() if line.startswith("| 5")
                or line.startswith("| 20")]
    assert len(matching) == 2 and all(line.split("|")[6].strip() == "0" for line in matching)  # equals FAISS exact
    assert "results equal: yes" in text and "iteration 0 100%, iteration 1 100%" in text
    assert "--executor lockstep" in text and "picks equal: yes" in text
    assert "| 4 | 50 |" in text.split("## batched")[1]
