"""One AL run in-process (common/experiment.py): resume after a kill, half-written iterations,
initial models, and the protocol/settings guards."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import common.experiment as experiment
import common.loop as loop
from common import storage
from common.errors import UserError
from common.experiment import (
    Protocol, RunSettings, ensure_initial_models, initial_model_path, method_folder, prepare_run, run_active_learning,
)
from common.schedule import Schedule
from common.strategies import AcquisitionOptions

CPU = torch.device("cpu")
ITERATIONS = 3
BUDGET = 10


def protocol(seed: int = 0, val_per_class: int = 20) -> Protocol:
    return Protocol(dataset="digits", imbalance=10.0, val_per_class=val_per_class,
                    minority_classes=(5, 6, 7, 8, 9), seed=seed)


def settings(digits_spec, method: str, iterations: int = ITERATIONS) -> RunSettings:
    return RunSettings(
        method=method, unsupervised=0, iterations=iterations, budget=BUDGET,
        schedule=digits_spec.schedule.with_epochs(1), ensemble=1, mc_samples=3,
        descriptor_layers=digits_spec.descriptor_layers["l80"], top_k=32,
    )


def options(digits_spec) -> AcquisitionOptions:
    return AcquisitionOptions(device=CPU, mc_samples=3, descriptor_layers=digits_spec.descriptor_layers["l80"], top_k=32)


def context(digits_spec, digits_data, out: Path, seed: int = 0):
    return prepare_run(digits_spec, digits_data, protocol(seed), 0, out, CPU, log=lambda _line: None)


def acquired(folder: Path) -> list[np.ndarray]:
    return [np.load(path) for path in sorted(folder.glob("acquired_*.npy"))]


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in records]


@pytest.fixture(scope="module")
def reference_runs(digits_spec, digits_data, tmp_path_factory):
    """Uninterrupted runs of entropy and fk-nn, to compare resumed runs against."""
    out = tmp_path_factory.mktemp("reference")
    ctx = context(digits_spec, digits_data, out)
    results = {}
    for method in ("entropy", "fk-nn"):
        records = run_active_learning(ctx, settings(digits_spec, method), options(digits_spec))
        folder = method_folder(ctx, settings(digits_spec, method))
        results[method] = (records, acquired(folder), folder)
    return out, ctx.folder, results


def test_reference_run_is_well_formed(reference_runs, digits_data):
    _, run_folder, results = reference_runs
    for method, (records, picks, folder) in results.items():
        assert [r["iteration"] for r in records] == list(range(ITERATIONS))
        assert [r["labelled"] for r in records] == [BUDGET * (b + 1) for b in range(ITERATIONS)]
        assert storage.read_jsonl(folder / "metrics.jsonl") == records
        assert len(picks) == ITERATIONS
        union = np.concatenate(picks)
        assert len(np.unique(union)) == BUDGET * ITERATIONS
        split = np.load(run_folder / "split.npz")
        assert np.isin(union, split["pool_indices"]).all()
        assert not np.isin(union, split["val_indices"]).any()
        # only the latest model is kept
        assert sorted(p.name for p in folder.glob("model_*.pt")) == [f"model_{ITERATIONS - 1:03d}.pt"]


def test_finished_run_is_not_redone(reference_runs, digits_spec, digits_data):
    out, _, results = reference_runs
    records, picks, folder = results["entropy"]
    before = (folder / "metrics.jsonl").read_bytes()
    ctx = context(digits_spec, digits_data, out)
    again = run_active_learning(ctx, settings(digits_spec, "entropy"), options(digits_spec))
    assert again == records
    assert (folder / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize("method", ["entropy", "fk-nn"])
def test_resume_after_kill_during_iteration_2(reference_runs, digits_spec, digits_data, tmp_path, monkeypatch, method):
    """A kill in iteration 2's training (after acquired_002.npy is written): the rerun redoes 2 only."""
    real_train = loop.train_model
    calls = {"count": 0}

    def train_then_die(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(loop, "train_model", train_then_die)
    ctx = context(digits_spec, digits_data, tmp_path)
    folder = method_folder(ctx, settings(digits_spec, method))
    with pytest.raises(KeyboardInterrupt):
        run_active_learning(ctx, settings(digits_spec, method), options(digits_spec))
    assert [r["iteration"] for r in storage.read_jsonl(folder / "metrics.jsonl")] == [0, 1]
    assert (folder / "acquired_002.npy").exists()  # half-written iteration on disk
    monkeypatch.setattr(loop, "train_model", real_train)

    ctx = context(digits_spec, digits_data, tmp_path)
    records = run_active_learning(ctx, settings(digits_spec, method), options(digits_spec))
    lines = storage.read_jsonl(folder / "metrics.jsonl")
    assert [r["iteration"] for r in lines] == [0, 1, 2]
    ref_records, ref_picks, _ = reference_runs[2][method]
    assert comparable(lines) == comparable(ref_records)
    assert comparable(records) == comparable(ref_records)
    for mine, theirs in zip(acquired(folder), ref_picks, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_resume_after_kill_between_checkpoint_and_metrics(reference_runs, digits_spec, digits_data, tmp_path,
                                                          monkeypatch):
    """model_002.pt saved but its metrics line never written: iteration 2 is redone from model_001."""
    real_append = storage.append_jsonl

    def append_then_die(path, record):
        if record["iteration"] == 2:
            raise KeyboardInterrupt
        real_append(path, record)

    monkeypatch.setattr(storage, "append_jsonl", append_then_die)
    ctx = context(digits_spec, digits_data, tmp_path)
    folder = method_folder(ctx, settings(digits_spec, "fk-nn"))
    with pytest.raises(KeyboardInterrupt):
        run_active_learning(ctx, settings(digits_spec, "fk-nn"), options(digits_spec))
    assert (folder / "model_002.pt").exists() and (folder / "model_001.pt").exists()
    monkeypatch.setattr(storage, "append_jsonl", real_append)

    run_active_learning(context(digits_spec, digits_data, tmp_path), settings(digits_spec, "fk-nn"),
                        options(digits_spec))
    ref_records, ref_picks, _ = reference_runs[2]["fk-nn"]
    assert comparable(storage.read_jsonl(folder / "metrics.jsonl")) == comparable(ref_records)
    for mine, theirs in zip(acquired(folder), ref_picks, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_stale_half_written_acquisition_is_redone(reference_runs, digits_spec, digits_data, tmp_path):
    """acquired_002.npy present (with other indices) but no metrics line: iteration 2 is redone."""
    ref_records, ref_picks, ref_folder = reference_runs[2]["entropy"]
    ctx = context(digits_spec, digits_data, tmp_path)
    folder = method_folder(ctx, settings(digits_spec, "entropy"))
    folder.mkdir(parents=True)
    for name in ("settings.json", "acquired_000.npy", "acquired_001.npy"):
        (folder / name).write_bytes((ref_folder / name).read_bytes())
    for record in ref_records[:2]:
        storage.append_jsonl(folder / "metrics.jsonl", record)
    # the model after iteration 1, recreated exactly by a 2-iteration run of the same seed
    short = tmp_path / "short"
    short_ctx = context(digits_spec, digits_data, short)
    run_active_learning(short_ctx, settings(digits_spec, "entropy", iterations=2), options(digits_spec))
    short_folder = method_folder(short_ctx, settings(digits_spec, "entropy", iterations=2))
    (folder / "model_001.pt").write_bytes((short_folder / "model_001.pt").read_bytes())
    split = np.load(ctx.folder / "split.npz")
    stale = np.setdiff1d(split["pool_indices"], np.concatenate(ref_picks))[:BUDGET]
    assert not np.array_equal(np.sort(stale), np.sort(ref_picks[2]))
    np.save(folder / "acquired_002.npy", stale)

    records = run_active_learning(ctx, settings(digits_spec, "entropy"), options(digits_spec))
    assert [r["iteration"] for r in storage.read_jsonl(folder / "metrics.jsonl")] == [0, 1, 2]
    assert comparable(records) == comparable(ref_records)
    np.testing.assert_array_equal(np.load(folder / "acquired_002.npy"), ref_picks[2])


def test_changed_settings_are_refused(reference_runs, digits_spec, digits_data):
    out = reference_runs[0]
    ctx = context(digits_spec, digits_data, out)
    changed = settings(digits_spec, "entropy")
    changed = RunSettings(**{**changed.__dict__, "budget": BUDGET + 1})
    with pytest.raises(UserError, match="budget"):
        run_active_learning(ctx, changed, options(digits_spec))


def test_changed_protocol_is_refused(digits_spec, digits_data, tmp_path):
    """A run folder whose stored protocol differs from the requested one is never reused silently."""
    ctx = context(digits_spec, digits_data, tmp_path)
    stored = storage.read_json(ctx.folder / "protocol.json")
    assert stored["seed"] == 0 and stored["val_per_class"] == 20
    storage.write_json(ctx.folder / "protocol.json", {**stored, "minority_classes": [0, 1, 2]})
    with pytest.raises(UserError):
        context(digits_spec, digits_data, tmp_path)


def test_out_of_order_metrics_are_refused(digits_spec, digits_data, tmp_path):
    ctx = context(digits_spec, digits_data, tmp_path)
    run_settings = settings(digits_spec, "random")
    folder = method_folder(ctx, run_settings)
    (first,) = run_active_learning(ctx, settings(digits_spec, "random", iterations=1), options(digits_spec))
    (folder / "metrics.jsonl").unlink()
    storage.append_jsonl(folder / "metrics.jsonl", {**first, "iteration": 1})  # a valid record, misplaced
    with pytest.raises(UserError, match="out of order"):
        run_active_learning(ctx, run_settings, options(digits_spec))


def test_same_seed_same_split_and_initial_model(digits_spec, digits_data, tmp_path):
    first = context(digits_spec, digits_data, tmp_path / "a")
    second = context(digits_spec, digits_data, tmp_path / "b")
    other = prepare_run(digits_spec, digits_data, protocol(seed=1), 0, tmp_path / "c", CPU, log=lambda _l: None)
    np.testing.assert_array_equal(first.split.pool_indices, second.split.pool_indices)
    np.testing.assert_array_equal(first.split.val_indices, second.split.val_indices)
    assert not np.array_equal(first.split.val_indices, other.split.val_indices)
    assert len(first.validation) == 200
    np.testing.assert_array_equal(np.bincount(first.validation.labels.numpy()), [20] * 10)
    for ctx in (first, second, other):
        ensure_initial_models(ctx, 1, kinds=("random",))
    states = [storage.load_checkpoint(initial_model_path(c, "random", 0))["state"] for c in (first, second, other)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not torch.equal(states[0]["conv1.0.weight"], states[2]["conv1.0.weight"])


def test_rotation_initial_model_transfers_all_but_classifier(digits_spec, digits_data, tmp_path):
    """Rotation pretraining (docs/method.md#rotation-pretraining) with a 1-epoch schedule (keeps the test fast)."""
    from dataclasses import replace

    spec = replace(digits_spec, pretrain_schedule=Schedule(lr=0.05, momentum=0.5, batch_size=25, epochs=1,
                                                           milestones=()))
    ctx = prepare_run(spec, digits_data, protocol(val_per_class=100), 0, tmp_path, CPU, log=lambda _l: None)
    ensure_initial_models(ctx, 1)
    random_ckpt = storage.load_checkpoint(initial_model_path(ctx, "random", 0))
    rotation_ckpt = storage.load_checkpoint(initial_model_path(ctx, "rotation", 0))
    random_state, rotation_state = random_ckpt["state"], rotation_ckpt["state"]
    assert 0.0 <= rotation_ckpt["rotation_accuracy"] <= 1.0
    assert set(random_state) == set(rotation_state)
    for key in random_state:
        if key.startswith("fc2."):
            assert torch.equal(random_state[key], rotation_state[key]), key
        else:
            assert random_state[key].shape == rotation_state[key].shape
            assert not torch.equal(random_state[key], rotation_state[key]), key


def test_resume_after_kill_during_iteration_2_acquisition(reference_runs, digits_spec, digits_data, tmp_path,
                                                          monkeypatch):
    """A kill inside the strategy at iteration 2 (nothing of iteration 2 on disk yet)."""
    strategy = experiment.STRATEGIES.get("fk-nn")
    real_select = strategy.select

    def select_then_die(state):
        if state.iteration == 2:
            raise KeyboardInterrupt
        return real_select(state)

    monkeypatch.setattr(strategy, "select", select_then_die)
    ctx = context(digits_spec, digits_data, tmp_path)
    folder = method_folder(ctx, settings(digits_spec, "fk-nn"))
    with pytest.raises(KeyboardInterrupt):
        run_active_learning(ctx, settings(digits_spec, "fk-nn"), options(digits_spec))
    assert [r["iteration"] for r in storage.read_jsonl(folder / "metrics.jsonl")] == [0, 1]
    assert not (folder / "acquired_002.npy").exists()
    monkeypatch.undo()
    assert strategy.select == real_select

    records = run_active_learning(context(digits_spec, digits_data, tmp_path), settings(digits_spec, "fk-nn"),
                                  options(digits_spec))
    ref_records, ref_picks, _ = reference_runs[2]["fk-nn"]
    assert [r["iteration"] for r in storage.read_jsonl(folder / "metrics.jsonl")] == [0, 1, 2]
    assert comparable(records) == comparable(ref_records)
    for mine, theirs in zip(acquired(folder), ref_picks, strict=True):
        np.testing.assert_array_equal(mine, theirs)
