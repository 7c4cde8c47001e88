"""--initial-labels (a starting labelled set, as KAFAL, LoGo and AAL use) in the central and asynchronous
modes, and the federated pieces that need no simulation: the per-client draw and the seeded participation.
(A federated simulation with a starting set: tests/test_federated.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asynchronous.driver import InProcess, run_asynchronous
from common.experiment import initial_label_positions
from conftest import assert_one_line_error, planned_asynchronous_run
from federated.server_app import initial_client_labels
from federated.task import Federation

TINY = ["--dataset", "digits", "--runs", "1", "--epochs", "2", "--device", "cpu", "--threads", "1", "--quiet"]
CENTRAL = [*TINY, "--iterations", "2", "--budget", "10"]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_starting_set_is_a_seeded_draw_of_the_pool():
    first = initial_label_positions(500, 40, seed=3)
    assert len(first) == len(np.unique(first)) == 40 and first.min() >= 0 and first.max() < 500
    assert np.array_equal(first, np.sort(first)) and np.array_equal(first, initial_label_positions(500, 40, seed=3))
    assert not np.array_equal(first, initial_label_positions(500, 40, seed=4))
    assert len(initial_label_positions(500, 0, seed=3)) == 0


def test_central_runs_train_on_the_starting_set_first_and_count_it(run_main, tmp_path):
    result = run_main("--out", tmp_path, *CENTRAL, "--methods", "random,entropy", "--initial-labels", "30")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "digits" / "ir10_val20_init30" / "run0"
    with np.load(run / "split.npz") as split:
        pool = split["pool_indices"]
    starting = pool[initial_label_positions(len(pool), 30, seed=0)]
    for method in ("random", "entropy"):
        records = lines(run / "unsup0" / method / "metrics.jsonl")
        assert [(r["labelled"], r["initial_labels"]) for r in records] == [(40, 30), (50, 30)]
        acquired = np.concatenate([np.load(run / "unsup0" / method / f"acquired_{b:03d}.npy") for b in range(2)])
        assert len(acquired) == 20 and not np.isin(acquired, starting).any()
    # entropy's first acquisition reads a model trained on the 30 labels (not the random fallback of an
    # untrained one): it differs from what random draws with the same stream
    first = {m: np.load(run / "unsup0" / m / "acquired_000.npy").tolist() for m in ("random", "entropy")}
    assert first["random"] != first["entropy"]
    again = run_main("--out", tmp_path, *CENTRAL, "--methods", "random,entropy", "--initial-labels", "30")
    assert again.returncode == 0 and lines(run / "unsup0" / "entropy" / "metrics.jsonl") == records


@pytest.mark.parametrize("flags, expected", [
    (["--initial-labels", "100000"], "exhaust the pool"),
    (["--initial-labels", "-3"], "non-negative"),
    (["--async-workers", "2", "--initial-labels", "100000", "--trainings", "1"], "exhaust the pool"),
])
def test_a_starting_set_too_large_is_one_line(run_main, tmp_path, flags, expected):
    assert expected in assert_one_line_error(run_main("--out", tmp_path, *CENTRAL, "--methods", "entropy", *flags))
    assert list(tmp_path.iterdir()) == []


def test_asynchronous_workers_start_from_a_model_trained_on_the_starting_set(tmp_path):
    flags = [*TINY, "--methods", "entropy", "--async-workers", "2", "--query-batch", "5", "--trainings", "2",
             "--initial-labels", "20"]
    ctx, job, exp = planned_asynchronous_run(tmp_path, *flags)
    records = run_asynchronous(ctx, job, exp.options, lambda _actors: InProcess())
    assert [(r["labelled"], r["initial_labels"]) for r in records] == [(30, 20), (40, 20)]
    (folder,) = tmp_path.glob("digits/ir10_val20_init20_async-*/run0/unsup0/entropy")
    starting = ctx.split.pool_indices[initial_label_positions(len(ctx.pool), 20, ctx.protocol.seed)]
    with np.load(folder / "shards.npz") as shards:
        shared = np.concatenate([shards[f"worker{w}"] for w in range(2)])
    assert len(shared) == len(ctx.pool) - 20 and not np.isin(shared, starting).any()
    asked = [i for line in lines(folder / "queries.jsonl") for i in line["indices"]]
    assert len(asked) == 20 and not np.isin(asked, starting).any()
    assert run_asynchronous(ctx, job, exp.options, lambda _actors: InProcess()) == records  # finished: checked


def test_an_interrupted_asynchronous_run_with_a_starting_set_resumes_to_the_uninterrupted_one(tmp_path):
    """Killed after its first training (a label arrived since): the resume replays the timeline, checks the stored
    training against it (the starting set counted) and ends with the files of a run never interrupted."""
    flags = [*TINY, "--methods", "entropy", "--async-workers", "2", "--query-batch", "5", "--trainings", "3",
             "--initial-labels", "20"]
    finished = []
    for out in (tmp_path / "whole", tmp_path / "cut"):
        ctx, job, exp = planned_asynchronous_run(out, *flags)
        finished.append(run_asynchronous(ctx, job, exp.options, lambda _actors: InProcess()))
    (folder,) = (tmp_path / "cut").glob("digits/ir10_val20_init20_async-*/run0/unsup0/entropy")
    metrics = (folder / "metrics.jsonl").read_text().splitlines()
    (folder / "metrics.jsonl").write_text(metrics[0] + "\n")
    queries = (folder / "queries.jsonl").read_text().splitlines()
    (folder / "queries.jsonl").write_text("\n".join(queries[:3]) + "\n")
    for number in (1, 2):
        (folder / f"model_{number:03d}.pt").unlink()
        (folder / f"acquired_{number:03d}.npy").unlink()
    resumed = run_asynchronous(ctx, job, exp.options, lambda _actors: InProcess())
    timeless = [[{k: v for k, v in r.items() if not k.endswith("seconds")} for r in records]
                for records in (finished[0], resumed)]
    assert timeless[0] == timeless[1] and [r["labelled"] for r in resumed] == [30, 40, 50]
    (whole,) = (tmp_path / "whole").glob("digits/ir10_val20_init20_async-*/run0/unsup0/entropy")
    assert [line["indices"] for line in lines(folder / "queries.jsonl")] == [
        line["indices"] for line in lines(whole / "queries.jsonl")]


def test_federated_starting_sets_follow_the_clients_pool_sizes():
    parts = [np.arange(0, 60), np.arange(60, 90), np.arange(90, 100)]
    drawn = initial_client_labels(parts, 20, seed=1)
    assert [len(ids) for ids in drawn] == [12, 6, 2]
    assert all(len(np.unique(ids)) == len(ids) and ids.max() < len(part) for ids, part in zip(drawn, parts))
    assert all(np.array_equal(a, b) for a, b in zip(drawn, initial_client_labels(parts, 20, seed=1)))


def test_participation_samples_a_seeded_share_of_the_clients_and_all_in_the_last_round():
    federation = Federation(clients=10, rounds=5, participation=0.8)
    rounds = [federation.sampled(seed=0, cycle=2, server_round=r) for r in range(1, 6)]
    assert [len(r) for r in rounds] == [8, 8, 8, 8, 10] and len({tuple(r) for r in rounds[:4]}) > 1
    assert rounds == [federation.sampled(seed=0, cycle=2, server_round=r) for r in range(1, 6)]
    assert Federation(clients=10, rounds=5).sampled(0, 0, 1) == list(range(10))
    assert federation.name().endswith("-p0.8") and "reinit" in Federation(clients=3, reinit_each_cycle=True).name()
