"""visualize.py on a tiny real digits run, and run.py's --keep-checkpoints that it depends on."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, assert_one_line_error, run_cli
from common.errors import UserError

import visualize

RUN_FLAGS = ["--runs", "1", "--budget", "10", "--epochs", "1", "--quiet", "--threads", "1", "--device", "cpu"]
STEM = "ir10_val20_unsup0_run0"  # digits defaults: imbalance 10, 20 validation images per class


def run_visualize(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "visualize.py", *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def method_dir(out: Path, method: str) -> Path:
    return out / "digits" / "ir10_val20" / "run0" / "unsup0" / method


def checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("model_*.pt"))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """Two iterations of random and fk-nn on digits, every checkpoint kept (once per module)."""
    out = tmp_path_factory.mktemp("vis")
    result = run_cli("--out", out, "--iterations", "2", "--methods", "random,fk-nn", "--keep-checkpoints", "all",
                     *RUN_FLAGS)
    assert result.returncode == 0, result.stderr
    return out


# ------------------------------------------------------------------------------------- --keep-checkpoints


def test_keep_checkpoints_all_keeps_every_iteration(digits_run):
    for method in ("random", "fk-nn"):
        assert checkpoints(method_dir(digits_run, method)) == ["model_000.pt", "model_001.pt"]


def test_keep_checkpoints_default_keeps_only_the_latest(tmp_path):
    result = run_cli("--out", tmp_path, "--iterations", "2", "--methods", "random", *RUN_FLAGS)
    assert result.returncode == 0, result.stderr
    assert checkpoints(method_dir(tmp_path, "random")) == ["model_001.pt"]


def test_keep_checkpoints_list_keeps_those_and_the_latest(tmp_path):
    result = run_cli("--out", tmp_path, "--iterations", "3", "--methods", "random", "--keep-checkpoints", "0",
                     *RUN_FLAGS)
    assert result.returncode == 0, result.stderr
    assert checkpoints(method_dir(tmp_path, "random")) == ["model_000.pt", "model_002.pt"]  # 001 was dropped


# ---------------------------------------------------------------------------------------------- plots


def test_visualize_confusion_and_tsne_at_a_kept_iteration(digits_run):
    result = run_visualize("--out", digits_run, "--iteration", "0", "--tsne", "--tsne-pixels", "--tsne-points", "100",
                           "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    plots = digits_run / "digits" / "plots"
    confusion, tsne = plots / f"confusion_{STEM}_b0.png", plots / f"tsne_{STEM}_b0.png"
    assert [Path(line) for line in result.stdout.splitlines()] == [confusion, tsne]
    assert confusion.stat().st_size > 1000 and tsne.stat().st_size > 1000
    # one confusion panel per method (4.6 in each at 120 dpi); t-SNE: raw pixels + one per method (5 in each)
    assert png_size(confusion)[0] == round(2 * 4.6 * 120)
    assert png_size(tsne) == (3 * 5 * 120, 5 * 120)


def test_visualize_defaults_to_the_latest_common_iteration(digits_run):
    result = run_visualize("--out", digits_run, "--methods", "fk-nn", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    confusion = digits_run / "digits" / "plots" / f"confusion_{STEM}_b1.png"
    assert result.stdout.split() == [str(confusion)]
    assert png_size(confusion)[0] == round(4.6 * 120)  # one method, one panel
    assert not (digits_run / "digits" / "plots" / f"tsne_{STEM}_b1.png").exists()  # no --tsne


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("args, expected", [
    (["--iteration", "5"], "iteration 5 was not kept"),
    (["--methods", "unknown-method"], "unknown-method"),
    (["--run", "7"], "no run at"),
    (["--unsupervised", "1"], "no results in"),
    (["--imbalance", "3"], "no run at"),
])
def test_visualize_errors_are_one_line(digits_run, args, expected):
    result = run_visualize("--out", digits_run, "--device", "cpu", *args)
    assert result.returncode == 2
    assert expected in assert_one_line_error(result)


def test_visualize_tiny_tsne_sample_is_not_a_traceback(digits_run):
    """--tsne-points 2 is accepted by the parser; it must either work or be a one-line error."""
    result = run_visualize("--out", digits_run, "--methods", "random", "--tsne", "--tsne-points", "2",
                           "--device", "cpu")
    assert "Traceback" not in result.stderr, result.stderr.strip().splitlines()[-1]
    if result.returncode != 0:
        assert_one_line_error(result)


# -------------------------------------------------------------------------------- choose(), in-process


def fake_run(tmp_path: Path, kept: dict[str, list[int]]) -> Path:
    run_dir = tmp_path / "run0"
    for method, iterations in kept.items():
        folder = run_dir / "unsup0" / method
        folder.mkdir(parents=True)
        for iteration in iterations:
            (folder / f"model_{iteration:03d}.pt").write_bytes(b"")
    return run_dir


def test_choose_picks_the_latest_iteration_every_method_kept(tmp_path):
    run_dir = fake_run(tmp_path, {"random": [0, 3, 7], "entropy": [0, 3], "fk-nn": [3, 7], "all-train": [0]})
    (run_dir / "unsup0" / "empty").mkdir()  # a method folder with no weights is not offered
    assert visualize.kept_iterations(run_dir / "unsup0" / "random") == [0, 3, 7]
    assert visualize.choose(run_dir, 0, None, None) == (["entropy", "fk-nn", "random"], 3)
    assert visualize.choose(run_dir, 0, ["random", "fk-nn"], None) == (["random", "fk-nn"], 7)
    assert visualize.choose(run_dir, 0, ["random"], 0) == (["random"], 0)
    with pytest.raises(UserError, match="iteration 0 was not kept for \\['fk-nn'\\]"):
        visualize.choose(run_dir, 0, ["random", "fk-nn"], 0)
    with pytest.raises(UserError, match="no kept models for \\['all-train'\\]"):
        visualize.choose(run_dir, 0, ["all-train"], None)


def test_choose_without_a_common_iteration(tmp_path):
    run_dir = fake_run(tmp_path, {"random": [0], "entropy": [1]})
    with pytest.raises(UserError, match="no common iteration"):
        visualize.choose(run_dir, 0, None, None)
    with pytest.raises(UserError, match="no results in"):
        visualize.choose(run_dir, 1, None, None)


def test_tsne_map_is_seeded_and_two_dimensional():
    features = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    first, second = visualize.tsne_map(features, 3), visualize.tsne_map(features, 3)
    assert first.shape == (40, 2)
    np.testing.assert_allclose(first, second)
