"""The reusable AL step (common/loop.py) and the label store (common/oracle.py).

The central pipeline was rebuilt on these functions; a digits run recorded before that change
(tests/data/reference_run.json) must come out identical: same acquired images, same metrics.
"""
from __future__ import annotations

import json
import warnings

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


SAME_TORCH = REFERENCE["torch"].split("+")[0] == torch.__version__.split("+")[0]
ACCURACIES = ("test_acc", "balanced_acc", "minority_acc")
# On another torch, floating-point results may differ: random's images are drawn from NumPy alone and stay
# identical, its accuracies move by float noise only; the model-driven methods may pick other images.
TOLERANCE = {"random": 0.02, "entropy": 0.15, "fk-nn": 0.15}


def assert_matches_reference(method: str, acquired: list[list[int]], records: list[dict], exact: bool) -> None:
    expected = REFERENCE["methods"][method]
    if exact:
        assert acquired == expected["acquired"], method
        assert records == expected["metrics"], method
        return
    assert [len(ids) for ids in acquired] == [len(ids) for ids in expected["acquired"]], method
    assert len({i for ids in acquired for i in ids}) == sum(map(len, acquired)), f"{method}: an image twice"
    if method == "random":
        assert acquired == expected["acquired"], "random draws from NumPy alone"
    for record, reference in zip(records, expected["metrics"], strict=True):
        unchanged = {k: v for k, v in reference.items() if k not in ACCURACIES and k != "class_acc"}
        assert {k: record[k] for k in unchanged} == unchanged, method
        for key in ACCURACIES:
            assert abs(record[key] - reference[key]) <= TOLERANCE[method], (method, key, record[key], reference[key])


def test_central_results_equal_the_reference_run(run_main, tmp_path):
    """Same seed -> the acquired indices and metrics recorded before the AL step was split up: identical on
    the torch the reference was made with, within float noise on any other (regenerate it with
    benchmarks/make_reference_run.py after an upgrade)."""
    if not SAME_TORCH:
        warnings.warn(f"reference made with torch {REFERENCE['torch']}, this is {torch.__version__}: "
                      f"compared within tolerances", stacklevel=1)
    result = run_main("--out", tmp_path, *REFERENCE["flags"])
    assert result.returncode == 0, result.stderr
    assert sorted(REFERENCE["methods"]) == sorted(TOLERANCE)
    for method in REFERENCE["methods"]:
        folder = next(tmp_path.glob(f"digits/*/run0/unsup0/{method}"))
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        acquired = [np.load(folder / f"acquired_{b:03d}.npy").tolist() for b in range(len(records))]
        timeless = [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in records]
        assert_matches_reference(method, acquired, timeless, exact=False)  # holds on any torch
        if SAME_TORCH:
            assert_matches_reference(method, acquired, timeless, exact=True)


def test_the_tolerant_comparison_catches_what_it_must():
    """The any-torch comparison refuses a changed random draw, a wrong count and a moved accuracy."""
    expected = REFERENCE["methods"]["random"]
    acquired, records = [list(ids) for ids in expected["acquired"]], [dict(r) for r in expected["metrics"]]
    assert_matches_reference("random", acquired, records, exact=False)
    for damage in ("swap", "short", "accuracy", "labelled"):
        bad_acquired, bad_records = [list(ids) for ids in acquired], [dict(r) for r in records]
        if damage == "swap":
            bad_acquired[0][0] = -1
        elif damage == "short":
            bad_acquired[1] = bad_acquired[1][:-1]
        elif damage == "accuracy":
            bad_records[2]["test_acc"] += 0.05
        else:
            bad_records[0]["labelled"] += 1
        with pytest.raises(AssertionError):
            assert_matches_reference("random", bad_acquired, bad_records, exact=False)
