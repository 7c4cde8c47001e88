"""The file layer keeps the README's promise: every mistake and every file-system failure ends in one
stderr line and exit code 2 (Ctrl-C: 130), an inconsistent results tree is refused, and every finished
file is byte-identical afterwards. One test (or parametrised group) per failure found by the hostile
user review; each reproduced a traceback or a silently accepted bad file before the fix."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, assert_one_line_error, run_cli

def digits_flags(iterations: int = 2) -> list[str]:
    return ["--dataset", "digits", "--runs", "1", "--iterations", str(iterations), "--budget", "10", "--epochs", "1",
            "--quiet", "--device", "cpu", "--threads", "1"]


RANDOM_RUN = digits_flags()
RUN = Path("digits") / "ir10_val20" / "run0"
METHOD = RUN / "unsup0" / "random"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file below `root` (lock files aside) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def run_plot(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_plot.py", *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished digits run of `random` (2 iterations, every checkpoint kept), made once."""
    out = tmp_path_factory.mktemp("finished")
    result = run_cli("--out", out, *RANDOM_RUN, "--methods", "random", "--keep-checkpoints", "all")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def results(finished, tmp_path) -> Path:
    """A private copy of the finished run to damage."""
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


def assert_refused_and_untouched(result, out: Path, before: dict[str, bytes], *expected: str,
                                 unfinished_ok: bool = False) -> str:
    """One line, exit 2, every earlier file byte-identical (with `unfinished_ok`, an unfinished iteration's
    new files may stay: a resume redoes it)."""
    line = assert_one_line_error(result)
    assert result.returncode == 2, result.stderr
    for text in expected:
        assert text in line, line
    after = snapshot(out)
    if unfinished_ok:
        after = {name: content for name, content in after.items() if name in before}
    assert after == before, "a finished file changed"
    return line


# ------------------------------------------------------------------ 1. file-system errors are one line

def test_out_that_is_a_file_is_one_line(run_main, tmp_path):
    a_file = tmp_path / "README.md"
    a_file.write_text("not a folder")
    line = assert_one_line_error(run_main("--out", a_file, *RANDOM_RUN, "--methods", "random"))
    assert "README.md" in line and "not a folder" in line
    assert a_file.read_text() == "not a folder"


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size: str):
    """A small tmpfs at `folder` (root only); the test skips where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def make_read_only(folder: Path) -> None:
    """Root ignores permission bits, so remount; others get chmod."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    else:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)


def test_read_only_out_is_one_line_and_keeps_results(finished, tmp_path):
    with mounted_tmpfs(tmp_path / "mnt", "64m") as out:
        shutil.copytree(finished, out, dirs_exist_ok=True)
        before = snapshot(out)
        make_read_only(out)
        line = assert_refused_and_untouched(run_cli("--out", out, *RANDOM_RUN, "--methods", "random,entropy"), out, before)
        assert str(out) in line and ("Read-only" in line or "Permission denied" in line)
        line = assert_refused_and_untouched(run_plot("--dataset", "digits", "--out", out), out, before)
        assert ("Read-only" in line or "Permission denied" in line) and "plots" in line


def test_full_disk_during_checkpoint_is_one_line_and_keeps_results(finished, tmp_path):
    with mounted_tmpfs(tmp_path / "mnt", "2m") as out:
        shutil.copytree(finished, out, dirs_exist_ok=True)
        stored = snapshot(out)
        metrics = (out / METHOD / "metrics.jsonl").read_bytes()
        # fill the disk, leaving less than a checkpoint's worth of room
        free = shutil.disk_usage(out).free
        (out / "filler").write_bytes(b"\0" * max(0, free - 24 * 1024))
        before = snapshot(out)
        result = run_cli("--out", out, *digits_flags(3), "--methods", "random")
        line = assert_refused_and_untouched(result, out, before, "No space left on device", unfinished_ok=True)
        assert "cannot write" in line
        assert (out / METHOD / "metrics.jsonl").read_bytes() == metrics
        assert not [p for p in (out / METHOD).iterdir() if p.name.startswith(".") and p.name != ".lock"]
        assert all(before[name] == content for name, content in stored.items())


# ---------------------------------------------- 2. inconsistent acquired files are refused on resume

def keep_first_iterations(method: Path, count: int) -> None:
    lines = (method / "metrics.jsonl").read_text().splitlines(keepends=True)
    (method / "metrics.jsonl").write_text("".join(lines[:count]))


@pytest.fixture(scope="module")
def four_iterations(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("four")
    flags = digits_flags(4)
    result = run_cli("--out", out, *flags, "--methods", "random", "--keep-checkpoints", "all")
    assert result.returncode == 0, result.stderr
    return out


def damage_copy(method: Path, *, replace_with) -> None:
    """The reviewer's recipe: 2 metrics lines kept, iterations 2-3 removed, acquired_001 replaced."""
    keep_first_iterations(method, 2)
    for name in ("acquired_002.npy", "acquired_003.npy", "model_002.pt", "model_003.pt"):
        (method / name).unlink()
    np.save(method / "acquired_001.npy", replace_with(method))


def validation_indices(method: Path) -> np.ndarray:
    with np.load(method.parent.parent / "split.npz") as split:
        return split["val_indices"][:10]


ACQUIRED_DAMAGE = {
    "copy of iteration 0": (lambda m: np.load(m / "acquired_000.npy"), "repeats images acquired"),
    "five indices": (lambda m: np.load(m / "acquired_001.npy")[:5], "holds 5 indices, not the budget 10"),
    "validation images": (validation_indices, "not in the run's pool"),
    "one image twice": (lambda m: np.repeat(np.load(m / "acquired_001.npy")[:5], 2), "holds an image twice"),
}


@pytest.mark.parametrize("case", ACQUIRED_DAMAGE)
def test_inconsistent_acquired_file_is_refused(four_iterations, tmp_path, run_main, case):
    out = tmp_path / "out"
    shutil.copytree(four_iterations, out)
    replace_with, expected = ACQUIRED_DAMAGE[case]
    damage_copy(out / METHOD, replace_with=replace_with)
    before = snapshot(out)
    flags = digits_flags(4)
    assert_refused_and_untouched(run_main("--out", out, *flags, "--methods", "random"), out, before,
                                 "acquired_001.npy", expected)


def test_acquired_file_count_must_match_metrics(results, run_main):
    """A metrics line that claims more labels than the acquired files hold is refused too."""
    path = results / METHOD / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[1]["labelled"] = 25
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    before = snapshot(results)
    flags = digits_flags(3)
    assert_refused_and_untouched(run_main("--out", results, *flags, "--methods", "random"), results, before,
                                 "acquired_001.npy", "does not match metrics.jsonl")


# ---------------------------------------------------- 3. valid JSON of the wrong shape is refused

def replace_metrics_line(out: Path, line: str) -> None:
    path = out / METHOD / "metrics.jsonl"
    path.write_text(path.read_text().splitlines(keepends=True)[0] + line + "\n")


WRONG_SHAPES = {
    "metrics line 42": (lambda out: replace_metrics_line(out, "42"), "metrics.jsonl (line 2: not a JSON object"),
    "metrics line without fields": (lambda out: replace_metrics_line(out, '{"iteration": 1}'),
                                    "metrics.jsonl (line 2: missing dataset"),
    "metrics accuracy 3": (lambda out: replace_metrics_line(
        out, (out / METHOD / "metrics.jsonl").read_text().splitlines()[1].replace('"test_acc": ', '"test_acc": 3, "x": ')),
        "test_acc is 3"),
    "protocol.json [1]": (lambda out: (out / RUN / "protocol.json").write_text("[1]"), "protocol.json"),
    "settings.json [1]": (lambda out: (out / METHOD / "settings.json").write_text("[1]"), "settings.json"),
    "split.npz without val_indices": (
        lambda out: np.savez(out / RUN / "split.npz", pool_indices=np.load(out / RUN / "split.npz")["pool_indices"]),
        "split.npz (no val_indices)"),
    "split.npz overlapping": (
        lambda out: np.savez(out / RUN / "split.npz", val_indices=np.load(out / RUN / "split.npz")["pool_indices"][:5],
                             pool_indices=np.load(out / RUN / "split.npz")["pool_indices"]),
        "validation and pool share images"),
}


@pytest.mark.parametrize("case", WRONG_SHAPES)
def test_wrong_shaped_file_is_one_line(results, run_main, case):
    damage, expected = WRONG_SHAPES[case]
    damage(results)
    before = snapshot(results)
    flags = digits_flags(3)
    assert_refused_and_untouched(run_main("--out", results, *flags, "--methods", "random"), results, before, expected)


@pytest.mark.parametrize("line", ["42", '{"iteration": 1}'])
def test_run_plot_refuses_wrong_shaped_records(results, line):
    replace_metrics_line(results, line)
    before = snapshot(results)
    assert_refused_and_untouched(run_plot("--dataset", "digits", "--out", results), results, before,
                                 "metrics.jsonl (line 2")


# ----------------------------------------------- 4. only the settings a method uses are compared

def test_flags_a_method_ignores_do_not_block_its_finished_run(results, run_main):
    before = snapshot(results)
    result = run_main("--out", results, *RANDOM_RUN, "--methods", "random", "--mc-samples", "10", "--top-k", "5",
                      "--vaal-steps", "7", "--descriptor-layers", "l20")
    assert result.returncode == 0, result.stderr
    assert snapshot(results) == before


def test_settings_a_method_uses_are_still_checked(tmp_path, run_main):
    first = run_main("--out", tmp_path, *RANDOM_RUN, "--methods", "entropy,var-ratio-mc", "--mc-samples", "3")
    assert first.returncode == 0, first.stderr
    stored = json.loads((tmp_path / RUN / "unsup0" / "entropy" / "settings.json").read_text())
    assert "mc_samples" not in stored and "top_k" not in stored and stored["method"] == "entropy"
    before = snapshot(tmp_path)
    entropy = run_main("--out", tmp_path, *RANDOM_RUN, "--methods", "entropy", "--top-k", "5", "--mc-samples", "9")
    assert entropy.returncode == 0, entropy.stderr
    assert snapshot(tmp_path) == before
    line = assert_refused_and_untouched(
        run_main("--out", tmp_path, *RANDOM_RUN, "--methods", "var-ratio-mc", "--mc-samples", "9"), tmp_path, before)
    assert "other settings (mc_samples)" in line


# --------------------------------------------------------- 6. Ctrl-C while importing is one line

@pytest.mark.parametrize("delay", [0.2, 0.8])
def test_ctrl_c_while_importing_is_one_line(tmp_path, delay):
    process = subprocess.Popen([sys.executable, "run.py", "--out", str(tmp_path), *RANDOM_RUN], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)  # torch alone takes longer than this to import
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in stderr + stdout, stderr


# ------------------------------------------------------------------------------------- 7. smaller ones

def test_repeated_minority_class_is_refused(run_main, tmp_path):
    line = assert_one_line_error(run_main("--out", tmp_path, *RANDOM_RUN, "--minority-classes", "5,5"))
    assert "class 5 more than once" in line
    assert not (tmp_path / "digits").exists()


def test_close_imbalance_ratios_get_their_own_folders(results, run_main):
    result = run_main("--out", results, *RANDOM_RUN, "--methods", "random", "--imbalance", "10.0000001",
                      "--iterations", "1")
    assert result.returncode == 0, result.stderr
    protocol = json.loads((results / "digits" / "ir10.0000001_val20" / "run0" / "protocol.json").read_text())
    assert protocol["imbalance"] == 10.0000001
    assert json.loads((results / RUN / "protocol.json").read_text())["imbalance"] == 10


@pytest.mark.parametrize("flags, expected", [
    (["--target", "1.5"], "--target"), (["--target", "0"], "--target"), (["--target", "-0.2"], "--target"),
    (["--imbalance", "nan"], "--imbalance"), (["--imbalance", "0.5"], "--imbalance"),
])
def test_run_plot_bad_numbers_are_refused(results, flags, expected):
    line = assert_one_line_error(run_plot("--dataset", "digits", "--out", results, *flags))
    assert expected in line and "run run.py first" not in line
    assert not (results / "digits" / "plots").exists()


def test_stale_temporary_files_are_removed_on_start(results, run_main):
    stale = [results / METHOD / ".metrics.jsonl.k2j4h6g8.tmp", results / METHOD / ".model_001.pt.a1b2c3d4.pt",
             results / RUN / ".split.npz.zz11yy22.npz", results / RUN / "initial" / ".random_m0.pt.q9w8e7r6.pt"]
    for path in stale:
        path.write_bytes(b"half a file")
    keep = results / METHOD / ".notes_of_the_user"
    keep.write_text("mine")
    result = run_main("--out", results, *RANDOM_RUN, "--methods", "random")
    assert result.returncode == 0, result.stderr
    assert not [path for path in stale if path.exists()]
    assert keep.read_text() == "mine"


def test_vaal_trains_on_the_chosen_device():
    """The VAE and discriminator live on the acquisition device (meta stands in for a GPU here)."""
    from common.strategies.vaal import VaalSettings, train_vaal

    labelled, unlabelled = torch.randn(6, 1, 28, 28), torch.randn(20, 1, 28, 28)
    vae, critic = train_vaal(labelled, unlabelled, VaalSettings(batch_size=4), 2, torch.Generator().manual_seed(0),
                             torch.device("meta"))
    assert {p.device.type for p in [*vae.parameters(), *critic.parameters()]} == {"meta"}
