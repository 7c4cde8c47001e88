"""The reusable AL step (common/loop.py) and the label store (common/oracle.py).

The central pipeline was rebuilt on these functions; a digits run recorded before that change
(tests/data/reference_run.json) must come out identical: same acquired images, same metrics.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.oracle import LabelRequestError, Oracle
from conftest import REPO_ROOT

REFERENCE = json.loads((REPO_ROOT / "tests" / "data" / "reference_run.json").read_text())


def test_oracle_reveals_only_acquired_labels():
    labels = torch.tensor([3, 1, 4, 1, 5, 9])
    oracle = Oracle(labels)
    assert oracle.reveal(np.array([4, 0])).tolist() == [5, 3]
    assert oracle.labels(np.array([0, 4])).tolist() == [3, 5]
    assert oracle.labelled.tolist() == [4, 0]  # acquisition order
    with pytest.raises(LabelRequestError, match="never acquired"):
        oracle.labels(np.array([1]))
    with pytest.raises(LabelRequestError, match="already labelled"):
        oracle.reveal(np.array([2, 0]))
    assert oracle.labelled.tolist() == [4, 0], "a refused request reveals nothing"
    with pytest.raises(LabelRequestError, match="twice"):
        oracle.reveal(np.array([1, 1]))
    with pytest.raises(LabelRequestError, match="outside"):
        oracle.reveal(np.array([6]))
    assert oracle.counts(10).tolist() == [0, 0, 0, 1, 0, 1, 0, 0, 0, 0]


def test_oracle_resumes_with_earlier_labels_in_order():
    oracle = Oracle(torch.arange(10), revealed=np.array([7, 2, 5]))
    oracle.reveal(np.array([1]))
    assert oracle.labelled.tolist() == [7, 2, 5, 1]
    with pytest.raises(LabelRequestError):
        oracle.reveal(np.array([2]))


def test_central_results_equal_the_reference_run(run_main, tmp_path):
    """Same seed -> the acquired indices and metrics recorded before the AL step was split up."""
    if REFERENCE["torch"].split("+")[0] != torch.__version__.split("+")[0]:
        pytest.skip(f"reference made with torch {REFERENCE['torch']}, this is {torch.__version__}: "
                    "floating-point results may differ; regenerate it with benchmarks/make_reference_run.py")
    result = run_main("--out", tmp_path, *REFERENCE["flags"])
    assert result.returncode == 0, result.stderr
    for method, expected in REFERENCE["methods"].items():
        folder = next(tmp_path.glob(f"digits/*/run0/unsup0/{method}"))
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        acquired = [np.load(folder / f"acquired_{b:03d}.npy").tolist() for b in range(len(records))]
        assert acquired == expected["acquired"], method
        assert [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in records] == expected["metrics"]
