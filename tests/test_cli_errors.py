"""User errors end with one line on stderr, a non-zero exit and no traceback (docs/usage.md: Mistakes, interrupts and resumes), and leave
finished results intact.

A few cases run `python run.py` as a real subprocess; the rest run run.py's __main__ in-process
(the `run_main` fixture), which is the same code path without a new interpreter per case.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import FAST_FLAGS, assert_one_line_error, run_cli

QUICK = ["--runs", "1", "--iterations", "2", "--budget", "10", "--epochs", "1", "--quiet", "--device", "cpu"]


SUBPROCESS_CASES = [
    (["--dataset", "fashion-mnist", "--data-root", "/nonexistent/fkal-data"], "does not exist"),
    (["--runs", "abc"], "--runs"),
]


@pytest.mark.parametrize("args, expected", SUBPROCESS_CASES, ids=[" ".join(a) for a, _ in SUBPROCESS_CASES])
def test_bad_input_is_one_line_error_subprocess(tmp_path, args, expected):
    line = assert_one_line_error(run_cli("--out", tmp_path, *QUICK, *args))
    assert expected in line
    assert not (tmp_path / "digits").exists()


CASES = [
    (["--dataset", "mnist", "--data-root", "/nonexistent/fkal-data"], "does not exist"),
    (["--dataset", "no-such-dataset"], "no-such-dataset"),
    (["--methods", "random,no-such-method"], "no-such-method"),
    (["--budget", "100000"], "budget"),
    (["--budget", "100", "--iterations", "100"], "exhaust"),
    (["--runs", "0"], "--runs"),
    (["--budget", "x"], "--budget"),
    (["--iterations", "1.5"], "--iterations"),
    (["--imbalance", "foo"], "--imbalance"),
    (["--epochs", "0"], "--epochs"),
    (["--imbalance", "0.5"], "imbalance"),
    (["--unsupervised", "3"], "takes 0, 1 and/or 2"),
    (["--val-per-class", "111"], "val-per-class"),
    (["--minority-classes", "10"], "minority"),
    (["--methods", "fk-nn", "--descriptor-layers", "conv1,no_such_layer"], "no_such_layer"),
    (["--methods", "fk-nn", "--descriptor-layers", ","], "descriptor-layers"),
    (["--seed", "-5"], "seed"),
    (["--run-start", "3", "--run-stop", "1"], "--run-start"),
    (["--top-k", "0"], "--top-k"),
    (["--minority-classes", "abc"], "--minority-classes"),
]


@pytest.mark.parametrize("args, expected", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_error(run_main, tmp_path, args, expected):
    line = assert_one_line_error(run_main("--out", tmp_path, *QUICK, *args))
    assert expected in line


def test_unknown_method_lists_the_valid_ones(run_main, tmp_path):
    line = assert_one_line_error(run_main("--out", tmp_path, *QUICK, "--methods", "fk-magic"))
    for name in ("random", "entropy", "bald-mc", "fk-nn", "fk-oracle"):
        assert name in line


def test_device_cuda_without_cuda_is_one_line_error(tmp_path):
    """--device cuda works where CUDA exists and is a one-line user error where it does not."""
    result = run_cli("--out", tmp_path, *FAST_FLAGS, "--methods", "random", "--device", "cuda")
    if torch.cuda.is_available():
        assert result.returncode == 0, result.stderr
    else:
        assert_one_line_error(result)


@pytest.fixture(scope="module")
def finished_template(tmp_path_factory):
    """One finished 2-iteration random run, made once (a real subprocess) and copied per test."""
    out = tmp_path_factory.mktemp("finished")
    result = run_cli("--out", out, *QUICK, "--methods", "random")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def finished_random_run(finished_template, tmp_path):
    """A private copy of the finished run; returns (out, method folder, metrics bytes)."""
    out = tmp_path / "out"
    shutil.copytree(finished_template, out)
    metrics = list((out / "digits").glob("**/unsup0/random/metrics.jsonl"))
    assert len(metrics) == 1
    return out, metrics[0].parent, metrics[0].read_bytes()


def _make_partial(folder: Path) -> None:
    """Turn a finished 2-iteration run into one that stopped after iteration 0."""
    lines = (folder / "metrics.jsonl").read_text().splitlines(keepends=True)
    (folder / "metrics.jsonl").write_text(lines[0])
    (folder / "model_000.pt").write_bytes((folder / "model_001.pt").read_bytes())


def test_resume_partial_run_completes(run_main, finished_random_run):
    out, folder, _ = finished_random_run
    original = (folder / "acquired_001.npy").read_bytes()
    _make_partial(folder)
    result = run_main("--out", out, *QUICK, "--methods", "random")
    assert result.returncode == 0, result.stderr
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"iteration": 1' in lines[1]
    assert (folder / "acquired_001.npy").read_bytes() == original  # random picks depend on the seed only


def test_corrupted_model_checkpoint_of_partial_run(finished_random_run):
    out, folder, _ = finished_random_run
    _make_partial(folder)
    partial = (folder / "metrics.jsonl").read_bytes()
    (folder / "model_000.pt").write_bytes(b"\x00garbage, not a checkpoint")
    line = assert_one_line_error(run_cli("--out", out, *QUICK, "--methods", "random"))
    assert "model_000.pt" in line
    assert (folder / "metrics.jsonl").read_bytes() == partial


def test_corrupted_initial_model(run_main, finished_random_run):
    out, folder, metrics = finished_random_run
    initial = folder.parents[1] / "initial" / "random_m0.pt"
    initial.write_bytes(b"garbage")
    line = assert_one_line_error(run_main("--out", out, *QUICK, "--methods", "entropy"))
    assert "random_m0.pt" in line
    assert (folder / "metrics.jsonl").read_bytes() == metrics


@pytest.mark.parametrize("payload", [{"state": {}}, {"states": [torch.zeros(3)]}, {"states": [{"x": torch.zeros(1)}]}],
                         ids=["no-states-key", "state-not-a-dict", "foreign-state-dict"])
def test_checkpoint_with_wrong_content_is_one_line_error(run_main, finished_random_run, payload):
    """A loadable checkpoint that is not this run's model (e.g. another file copied over it)."""
    out, folder, _ = finished_random_run
    _make_partial(folder)
    torch.save(payload, folder / "model_000.pt")
    assert_one_line_error(run_main("--out", out, *QUICK, "--methods", "random"))


def test_corrupted_metrics_file(run_main, finished_random_run):
    out, folder, metrics = finished_random_run
    (folder / "metrics.jsonl").write_bytes(metrics + b'{"iteration": 2, "test_a\n')
    line = assert_one_line_error(run_main("--out", out, *QUICK, "--methods", "random"))
    assert "metrics.jsonl" in line


def test_corrupted_split_file(run_main, finished_random_run):
    out, folder, metrics = finished_random_run
    split = folder.parents[1] / "split.npz"
    split.write_bytes(split.read_bytes()[:100])
    assert_one_line_error(run_main("--out", out, *QUICK, "--methods", "random"))
    assert (folder / "metrics.jsonl").read_bytes() == metrics


def test_corrupted_acquired_file(run_main, finished_random_run):
    out, folder, _ = finished_random_run
    _make_partial(folder)
    (folder / "acquired_000.npy").write_bytes(b"\x93NUMPY broken")
    line = assert_one_line_error(run_main("--out", out, *QUICK, "--methods", "random"))
    assert "acquired_000.npy" in line


def test_changed_settings_is_one_line_error(run_main, finished_random_run):
    out, folder, metrics = finished_random_run
    flags = ["--runs", "1", "--iterations", "2", "--budget", "10", "--epochs", "2", "--quiet", "--device", "cpu"]
    line = assert_one_line_error(run_main("--out", out, *flags, "--methods", "random"))
    assert "schedule" in line
    assert (folder / "metrics.jsonl").read_bytes() == metrics
