"""Regenerate tests/data/reference_run.json (a digits run's acquired indices and metrics, seconds aside), e.g.
after a torch upgrade changes floating-point results:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/make_reference_run.py . > tests/data/reference_run.json
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

root = Path(sys.argv[1])
flags = ["--dataset", "digits", "--runs", "1", "--iterations", "3", "--budget", "10", "--epochs", "2", "--quiet",
         "--device", "cpu", "--threads", "1", "--methods", "random,entropy,fk-nn"]
with tempfile.TemporaryDirectory() as out:
    subprocess.run([sys.executable, "run.py", "--out", out, *flags], cwd=root, check=True)
    methods = {}
    for folder in sorted(Path(out).glob("digits/*/run0/unsup0/*")):
        records = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
        methods[folder.name] = {
            "acquired": [np.load(folder / f"acquired_{b:03d}.npy").tolist() for b in range(len(records))],
            "metrics": [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in records],
        }
print(json.dumps({"flags": flags, "torch": torch.__version__, "methods": methods}, indent=1))
