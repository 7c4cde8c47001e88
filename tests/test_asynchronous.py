"""Asynchronous label querying (AAL) on Ray, and --executor ray (tiny: digits, LeNet, 1 epoch).

Ray starts once for the whole file (about 10 s, then each run's actors import torch); the rules of the
clock and most checks run in one process (`InProcess`), which gives the same results as Ray by design:
that equality is itself tested.
"""
from __future__ import annotations

import collections
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import planning
import run as run_module
from asynchronous import clock
from asynchronous.driver import InProcess, RayActors, run_asynchronous
from asynchronous.experiment import run_settings
from asynchronous.shards import clustered_shards, random_shards
from common.experiment import Protocol, prepare_run
from common.naming import protocol_name, protocol_variant
from common.oracle import LabelRequestError
from common.records import METRICS_FIELDS, QUERIES_FIELDS, metrics_problem
from conftest import FAST_FLAGS, assert_one_line_error, planned_asynchronous_run

TINY = ["--dataset", "digits", "--runs", "1", "--epochs", "1", "--device", "cpu", "--threads", "1", "--quiet",
        "--methods", "entropy"]
ASYNC = [*TINY, "--async-workers", "3", "--servers", "2", "--query-batch", "10", "--trainings", "3"]
SETTING = "w3-s2-DA-RS-b10-t30-l0-60-tt0.07"


def method_folder(out: Path, setting: str, label: str) -> Path:
    return out / "digits" / f"ir10_val20_async-{setting}" / "run0" / "unsup0" / label


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def timeless(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if not k.endswith("seconds")} for line in lines]


def in_process(out: Path, *flags: str) -> list[list[dict]]:
    """`run.py FLAGS` with every actor a plain object in this process."""
    command = planning.parse(["--out", str(out), *flags])
    exp = planning.experiment(command)
    return [run_asynchronous(ctx, job, exp.options, lambda _actors: InProcess())
            for ctx, job in planning.asynchronous_jobs(command, exp)]


@pytest.fixture(scope="session")
def ray_cluster():
    """Ray on this machine, once per test session (the CLI and the driver reuse the connection)."""
    from asynchronous.executor import connect, shutdown

    started = connect()
    yield
    if started:
        shutdown()


@pytest.fixture(scope="module", autouse=True)
def ray_down_after_this_file():
    """Leave no Ray behind for other files (Flower's simulation would adopt it)."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


# --------------------------------------------------------------------------------------------- shards
def test_random_shards_are_disjoint_equal_and_cover_the_pool():
    shards = random_shards(103, 10, np.random.default_rng(0))
    assert sorted(len(s) for s in shards) == [10] * 7 + [11] * 3
    assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(103))
    assert all(np.all(np.diff(s) > 0) for s in shards)
    assert [s.tolist() for s in random_shards(103, 10, np.random.default_rng(0))] == [s.tolist() for s in shards]


def test_clustered_shards_are_disjoint_and_cover_the_pool():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(centre, 0.1, size=(30, 4)) for centre in (0.0, 5.0, 10.0)])
    shards = clustered_shards(features, 3, seed=1)
    assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(90))
    assert sorted(np.unique(shard // 30).tolist() for shard in shards) == [[0], [1], [2]]  # one cluster each


def test_assignment_ra_gives_workers_different_strategies_da_one():
    def assignments(argv: list[str]) -> list[tuple[str, tuple[str, ...]]]:
        command = planning.parse(argv)
        return command.asynchronous.assignments(planning.experiment(command).methods)

    for methods in ([], ["--methods", "entropy"]):  # AAL's list unless several methods are given
        (label, strategies), = assignments(["--async-workers", "4", "--assignment", "RA", "--dataset", "digits",
                                            *methods])
        assert strategies == ("entropy", "least-confidence", "margin", "entropy")
        assert label == "entropy+least-confidence+margin"
    (label, strategies), = assignments(["--async-workers", "3", "--assignment", "RA", "--methods", "fk-nn,random"])
    assert strategies == ("fk-nn", "random", "fk-nn") and label == "fk-nn+random"
    runs = assignments(["--async-workers", "2", "--assignment", "DA", "--methods", "entropy,fk-nn"])
    assert runs == [("entropy", ("entropy", "entropy")), ("fk-nn", ("fk-nn", "fk-nn"))]


# --------------------------------------------------------------------------------------------- clock
def events(timing: clock.Asynchrony, sizes: list[int], seed: int = 0) -> list[tuple]:
    return list(clock.simulate(timing, sizes, seed))


def test_clock_trainings_last_as_long_as_their_training_set_the_starting_set_included():
    timing = clock.Asynchrony(workers=2, servers=1, query_batch=5, threshold=10, trainings=2, latency=(0.0, 60.0),
                              train_time=0.5)
    for initial in (0, 1000):
        timeline = list(clock.simulate(timing, [50, 50], seed=0, initial_labels=initial))
        started = {item.number: (now, item.labelled) for kind, item, now in timeline if kind == clock.TRAIN}
        published = {item.number: now for kind, item, now in timeline if kind == clock.PUBLISH}
        for number, (start, labelled) in started.items():
            assert published[number] - start == pytest.approx(0.5 * (initial + labelled))


def test_clock_async_workers_ask_once_per_model_version_and_versions_increase():
    """AAL: after its labels arrive a worker waits for a model newer than the one it used, so no worker
    makes two requests with one model version (the initial model included)."""
    timing = clock.Asynchrony(workers=4, servers=2, query_batch=5, threshold=20, trainings=5, latency=(0.0, 60.0))
    timeline = events(timing, [100] * 4)
    asked = [item for kind, item, _ in timeline if kind == clock.ASK]
    arrivals = [(item, now) for kind, item, now in timeline if kind == clock.ARRIVE]
    published = [(item.number, now) for kind, item, now in timeline if kind == clock.PUBLISH]
    assert len({(q.worker, q.version) for q in asked}) == len(asked), "a worker asked twice with one model"
    assert all(now == pytest.approx(q.issued + q.latency) and 0 <= q.latency <= 60 for q, now in arrivals)
    assert [n for n, _ in published] == [1, 2, 3, 4, 5] and [t for _, t in published] == sorted(t for _, t in published)
    assert sum(q.size for q in asked) == timing.budget == 100
    when = dict(published) | {0: 0.0}
    for query in asked:  # the newest model when sent; sent as soon as both the labels and that model were there
        assert query.version == max([n for n, t in published if t <= query.issued], default=0)
        assert query.issued == max(query.ready, when[query.version])
    trainings = [item for kind, item, _ in timeline if kind == clock.TRAIN]
    assert [t.server for t in trainings] == [0, 1, 0, 1, 0] and all(t.labelled >= 20 * t.number for t in trainings)
    assert events(timing, [100] * 4) == timeline  # the same seed, the same timeline


def test_clock_a_threshold_above_one_request_per_worker_does_not_stall():
    """With --train-threshold above query batch x workers the one-request-per-model rule alone would stop the
    clock; idle workers then ask again with the same model, and only then."""
    timing = clock.Asynchrony(workers=3, query_batch=10, threshold=50, trainings=3)
    asked = [item for kind, item, _ in events(timing, [100] * 3) if kind == clock.ASK]
    per_version = collections.Counter(q.version for q in asked)
    assert sum(q.size for q in asked) == 150 and per_version[0] >= 5 > 3


def test_clock_sync_rounds_wait_for_the_slowest_and_the_training():
    timing = clock.Asynchrony(workers=4, servers=2, query_batch=5, threshold=20, trainings=3, sync=True)
    timeline = events(timing, [100] * 4)
    asked = [item for kind, item, _ in timeline if kind == clock.ASK]
    assert [q.version for q in asked] == [0] * 4 + [1] * 4 + [2] * 4
    published = {item.number: now for kind, item, now in timeline if kind == clock.PUBLISH}
    assert all(q.issued == published[q.version] for q in asked if q.version)  # a round starts at a publication
    async_waits = [q.latency for q in asked]
    sync_waits = [q.issued - q.ready + q.latency for q in asked]
    assert np.mean(sync_waits) > np.mean(async_waits) and min(np.subtract(sync_waits, async_waits)) >= 0


def test_clock_trainings_never_overlap_at_aals_threshold_so_servers_change_nothing():
    """At AAL's threshold (query batch x workers) every worker waits for each new model, so a training is due
    only after the last one was published: the timeline is the same with 1 or 4 servers (bar the server
    names), asynchronous or synchronous rounds alike."""
    def timeline(servers: int, sync: bool) -> list[tuple]:
        return [(kind, getattr(item, "number", None), getattr(item, "worker", None), now)
                for kind, item, now in events(clock.Asynchrony(workers=10, servers=servers, query_batch=25,
                                                               threshold=250, trainings=6, sync=sync), [2500] * 10)]

    for sync in (False, True):
        assert timeline(1, sync) == timeline(4, sync)
        kinds = [kind for kind, *_ in timeline(4, sync) if kind in (clock.TRAIN, clock.PUBLISH)]
        assert kinds == [clock.TRAIN, clock.PUBLISH] * 6


# --------------------------------------------------------------------------------------------- in one process
def test_one_worker_without_latency_async_and_sync_label_the_same_images(tmp_path):
    """One worker, zero latency and instantaneous training: asynchronous querying has nothing to overlap."""
    flags = [*TINY, "--async-workers", "2", "--query-batch", "10", "--trainings", "3", "--latency", "0:0",
             "--train-time", "0"]
    ctx, job, exp = planned_asynchronous_run(tmp_path, *flags)
    runs = []
    for sync in (False, True):
        timing = clock.Asynchrony(workers=1, query_batch=10, threshold=10, trainings=3, sync=sync, latency=(0.0, 0.0),
                                  train_time=0.0)
        ctx = prepare_run(ctx.spec, exp.data, replace(ctx.protocol, asynchronous=timing.name()), 0, tmp_path,
                          ctx.device)
        one = type(job)(run=0, timing=timing, strategies=("entropy",), settings=job.settings)
        records = run_asynchronous(ctx, one, exp.options, lambda _actors: InProcess())
        folder = ctx.folder / "unsup0" / one.label
        runs.append(([line["indices"] for line in read_lines(folder / "queries.jsonl")], records))
    (async_labels, async_records), (sync_labels, sync_records) = runs
    assert async_labels == sync_labels and len(async_labels) == 3
    assert [r["base_version"] for r in async_records] == [0, 1, 2]  # each request used the newest model
    assert [r["test_acc"] for r in async_records] == [r["test_acc"] for r in sync_records]


def test_resume_replays_the_timeline_and_redoes_nothing_twice(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    in_process(whole, *ASYNC)
    in_process(cut, *ASYNC)
    folder = method_folder(cut, SETTING, "entropy")
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    (folder / "metrics.jsonl").write_text(lines[0] + "\n")  # killed after training 1 ...
    queries = (folder / "queries.jsonl").read_text().splitlines()
    (folder / "queries.jsonl").write_text("\n".join(queries[:4]) + "\n")  # ... with a label that had arrived since
    for number in (1, 2):
        (folder / f"model_{number:03d}.pt").unlink()
        (folder / f"acquired_{number:03d}.npy").unlink()
    in_process(cut, *ASYNC)
    reference = method_folder(whole, SETTING, "entropy")
    for name in ("metrics.jsonl", "queries.jsonl"):
        assert timeless(read_lines(folder / name)) == timeless(read_lines(reference / name)), name


def test_clustered_shards_and_round_robin_strategies_with_fk_nn(tmp_path):
    """DS shards from the initial model's features; RA over fk-nn (it reads the validation set) and entropy."""
    records, = in_process(tmp_path, *ASYNC, "--split", "DS", "--assignment", "RA", "--methods", "fk-nn,entropy")
    folder = method_folder(tmp_path, SETTING.replace("RS", "DS").replace("DA", "RA"), "fk-nn+entropy")
    queries = read_lines(folder / "queries.jsonl")
    assert {(q["worker"], q["strategy"]) for q in queries} == {(0, "fk-nn"), (1, "entropy"), (2, "fk-nn")}
    assert [r["labelled"] for r in records] == [30, 60, 90] and records[0]["validation_labels"] == 200
    shards = np.load(folder / "shards.npz")
    pool = np.sort(np.concatenate([shards[f"worker{w}"] for w in range(3)]))
    with np.load(folder.parent.parent / "split.npz") as split:
        assert np.array_equal(pool, split["pool_indices"])  # the clusters split the whole pool


def test_real_latency_mode_completes(tmp_path):
    records, = in_process(tmp_path, *ASYNC, "--latency", "0:0.05", "--latency-mode", "real", "--sync")
    assert [r["model_version"] for r in records] == [1, 2, 3] and [r["labelled"] for r in records] == [30, 60, 90]
    queries = read_lines(method_folder(tmp_path, SETTING.replace("l0-60", "l0-0.05") + "-real", "entropy+sync")
                         / "queries.jsonl")
    assert len(queries) == 9 and all(q["simulated_wait"] >= q["latency"] for q in queries)


def test_label_store_refuses_an_image_already_labelled(tmp_path, digits_spec, digits_data):
    from asynchronous.actors import LabelStore

    protocol = Protocol("digits", 10.0, 20, (5, 6, 7, 8, 9), 0, asynchronous="test")
    ctx = prepare_run(digits_spec, digits_data, protocol, 0, tmp_path, digits_data.train.images.device)
    shards = random_shards(len(ctx.pool), 2, np.random.default_rng(0))
    command = planning.parse(["--async-workers", "2", *TINY])
    exp = planning.experiment(command)
    settings = run_settings(planning.run_settings(command, exp, "entropy", 0), "entropy", clock.Asynchrony(workers=2))
    store = LabelStore(ctx, tmp_path / "m", settings, {"method": "entropy"}, shards, [], [], {}, 0)
    line = {"worker": 0, "query": 0}
    assert store.reveal(line, (shards[0][:3], 0.1, {})) == 3
    with pytest.raises(LabelRequestError):
        store.reveal({"worker": 0, "query": 1}, (shards[0][2:4], 0.1, {}))  # position 2 again
    with pytest.raises(LabelRequestError):
        store.reveal({"worker": 0, "query": 1}, (shards[1][:1], 0.1, {}))  # another worker's shard
    assert store.obtained(0, 1)[0].tolist() == shards[0][:3].tolist() and store.obtained(0, 2) is None


def test_protocol_variant_names_folders_and_old_protocols_stay_valid(tmp_path, digits_spec, digits_data):
    assert protocol_variant() == "" and protocol_variant("c3-iid") == "fed-c3-iid"
    assert protocol_name(10.0, 20, protocol_variant(asynchronous=SETTING)) == f"ir10_val20_async-{SETTING}"
    protocol = Protocol("digits", 10.0, 20, (5, 6, 7, 8, 9), 0)
    ctx = prepare_run(digits_spec, digits_data, protocol, 0, tmp_path, digits_data.train.images.device)
    stored = json.loads((ctx.folder / "protocol.json").read_text())
    del stored["asynchronous"]  # written before the field existed
    (ctx.folder / "protocol.json").write_text(json.dumps(stored))
    again = prepare_run(digits_spec, digits_data, protocol, 0, tmp_path, digits_data.train.images.device)
    assert np.array_equal(again.split.pool_indices, ctx.split.pool_indices)


@pytest.mark.parametrize("flags, expected", [
    (["--async-workers", "3", "--assignment", "XA"], "invalid choice"),
    (["--async-workers", "3", "--split", "KS"], "invalid choice"),
    (["--async-workers", "3", "--latency", "60:0"], "LO:HI"),
    (["--async-workers", "3", "--latency", "abc"], "LO:HI"),
    (["--async-workers", "3", "--servers", "0"], "positive"),
    (["--async-workers", "3", "--train-time", "-1"], ">= 0"),
    (["--async-workers", "3", "--latency-mode", "fast"], "invalid choice"),
    (["--async-workers", "-2"], "non-negative"),
    (["--executor", "dask"], "invalid choice"),
    (["--async-workers", "3", "--clients", "3"], "exclude each other"),
    (["--async-workers", "3", "--methods", "all-train"], "central reference"),
    (["--async-workers", "3", "--methods", "nope"], "unknown method"),
    (["--async-workers", "3", "--initial"], "--initial"),
    (["--async-workers", "3", "--executor", "ray"], "--executor ray"),
    (["--async-workers", "3", "--query-batch", "100", "--trainings", "50"], "exhaust the pool"),
    (["--gpus-per-task", "0.5"], "--gpus-per-task is a flag of central runs with --executor ray"),
    (["--gpus-per-task", "0.5", "--executor", "ray", "--device", "cpu"], "--device cpu trains on the CPU"),
    (["--gpus-per-task", "0", "--executor", "ray"], "positive"),
])
def test_bad_asynchronous_flags_are_one_line_errors(run_main, tmp_path, flags, expected):
    result = run_main("--out", tmp_path, "--dataset", "digits", "--quiet", *flags)
    assert result.returncode == 2
    assert expected in assert_one_line_error(result)
    assert not (tmp_path / "digits").exists() or "exhaust" in expected  # refused before any run started


# --------------------------------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def ray_run(ray_cluster, tmp_path_factory) -> Path:
    """run.py with 3 workers and 2 servers on Ray actors."""
    out = tmp_path_factory.mktemp("async")
    run_module.main(run_module.get_args_parser().parse_args(["--out", str(out), *ASYNC]))
    return out


def test_ray_run_completes_with_increasing_versions_and_every_label_logged(ray_run):
    folder = method_folder(ray_run, SETTING, "entropy")
    records, queries = read_lines(folder / "metrics.jsonl"), read_lines(folder / "queries.jsonl")
    assert [r["model_version"] for r in records] == [1, 2, 3] and [r["iteration"] for r in records] == [0, 1, 2]
    assert all(metrics_problem(r) is None and r["asynchronous"] == SETTING and not r["sync"] for r in records)
    assert [r["server"] for r in records] == [0, 1, 0] and [r["labelled"] for r in records] == [30, 60, 90]
    assert all(set(QUERIES_FIELDS) <= set(q) for q in queries) and len(queries) == 9
    labels = [i for q in queries for i in q["indices"]]
    assert len(labels) == len(set(labels)) == 90  # no image labelled twice; the log accounts for every label
    acquired = np.concatenate([np.load(folder / f"acquired_{b:03d}.npy") for b in range(3)])
    assert sorted(acquired.tolist()) == sorted(labels)
    shards = np.load(folder / "shards.npz")
    for query in queries:
        assert set(query["indices"]) <= set(shards[f"worker{query['worker']}"].tolist())
        assert query["model_version"] <= max(r["model_version"] for r in records)
    versions = [q["model_version"] for q in sorted(queries, key=lambda q: q["issued_at"])]
    assert versions == sorted(versions) and versions[-1] >= 1  # workers switch to newer models


def test_ray_gives_the_results_of_one_process(ray_run, tmp_path):
    in_process(tmp_path, *ASYNC)
    for name in ("metrics.jsonl", "queries.jsonl"):
        assert timeless(read_lines(method_folder(tmp_path, SETTING, "entropy") / name)) == \
            timeless(read_lines(method_folder(ray_run, SETTING, "entropy") / name)), name


def test_run_plot_draws_async_accuracy_and_query_wait(ray_run, tmp_path):
    import subprocess
    import sys

    from conftest import REPO_ROOT

    plotted = subprocess.run([sys.executable, "run_plot.py", "--dataset", "digits", "--out", str(ray_run)],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert plotted.returncode == 0, plotted.stderr
    plots = ray_run / "digits" / "plots"
    assert (plots / f"async_accuracy_ir10_val20_async-{SETTING}_unsup0.png").stat().st_size > 10_000
    assert (plots / "query_wait_ir10_val20_unsup0.png").stat().st_size > 10_000
    rows = (plots / "query_wait_ir10_val20_unsup0.csv").read_text().splitlines()
    assert rows[0].startswith("method,sync") and rows[1].startswith("entropy,False,3,2,0:60,10,")


class KillOnce(RayActors):
    """Kills worker 0 (Ray restarts it) right after sending it its second request."""

    pids: list[int] = []

    def call(self, actor, method, *args, returns=1):
        import ray

        handle = super().call(actor, method, *args, returns=returns)
        if method == "query" and args[0] == 1 and actor is self.actors[1] and not self.pids:
            self.pids.append(ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()), timeout=120))
            ray.kill(actor, no_restart=False)
        return handle


def test_worker_killed_mid_run_loses_and_repeats_no_label(ray_cluster, tmp_path):
    import ray

    flags = [*TINY, "--async-workers", "2", "--query-batch", "10", "--trainings", "2"]
    command = planning.parse(["--out", str(tmp_path / "killed"), *flags])
    exp = planning.experiment(command)
    (ctx, job), = planning.asynchronous_jobs(command, exp)
    backends = []

    def backend(actors):
        backends.append(KillOnce(actors, gpu=False))
        backends[-1].close = lambda: None  # keep the actors for the check below
        return backends[-1]

    records = run_asynchronous(ctx, job, exp.options, backend)
    worker = backends[0].actors[1]
    assert KillOnce.pids and ray.get(worker.__ray_call__.remote(lambda _self: os.getpid())) != KillOnce.pids[0]
    for actor in backends[0].actors:
        ray.kill(actor)
    setting = "w2-s1-DA-RS-b10-t20-l0-60-tt0.07"
    queries = read_lines(method_folder(tmp_path / "killed", setting, "entropy") / "queries.jsonl")
    labels = [i for q in queries for i in q["indices"]]
    assert len(labels) == len(set(labels)) == 40 and [r["labelled"] for r in records] == [20, 40]
    in_process(tmp_path / "reference", *flags)
    reference = read_lines(method_folder(tmp_path / "reference", setting, "entropy") / "queries.jsonl")
    assert timeless(queries) == timeless(reference)  # the restarted worker asked for exactly the same images


def test_executor_ray_grid_equals_the_local_executor(ray_cluster, run_main, tmp_path):
    grid = [*FAST_FLAGS, "--dataset", "digits", "--methods", "random,entropy", "--runs", "2", "--threads", "1"]
    assert run_main("--out", tmp_path / "local", *grid).returncode == 0
    result = run_main("--out", tmp_path / "ray", *grid, "--executor", "ray")
    assert result.returncode == 0, result.stderr
    for run in (0, 1):
        for method in ("random", "entropy"):
            path = Path("digits") / "ir10_val20" / f"run{run}" / "unsup0" / method / "metrics.jsonl"
            local, distributed = read_lines(tmp_path / "local" / path), read_lines(tmp_path / "ray" / path)
            assert len(local) == 2 and timeless(distributed) == timeless(local), (run, method)
    again = run_main("--out", tmp_path / "ray", *grid, "--executor", "ray")  # resumes: nothing left to do
    assert again.returncode == 0 and read_lines(tmp_path / "ray" / path) == distributed
    assert set(METRICS_FIELDS) <= set(local[0])
    no_gpu = run_main("--out", tmp_path / "gpu", *grid, "--executor", "ray", "--gpus-per-task", "0.5", "--device", "auto")
    assert "the Ray cluster has 0 GPU(s)" in assert_one_line_error(no_gpu)  # refused, not waiting for ever


def test_gpus_per_task_schedules_the_grid_on_gpu_shares_with_the_local_results(ray_cluster, run_main, tmp_path):
    """A Ray whose one GPU is logical (this machine has none): four runs ask for half a GPU each, Ray hands
    each GPU 0 (two at a time) and the results equal the local executor's."""
    import ray

    from asynchronous import executor

    ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, object_store_memory=executor.OBJECT_STORE_BYTES,
             include_dashboard=False, log_to_driver=False)
    try:
        grid = [*FAST_FLAGS, "--dataset", "digits", "--methods", "random,entropy", "--runs", "2", "--threads", "1"]
        assert run_main("--out", tmp_path / "local", *grid).returncode == 0
        command = planning.parse(["--out", str(tmp_path / "ray"), *grid, "--executor", "ray", "--gpus-per-task",
                                  "0.5", "--device", "auto"])
        exp = planning.experiment(command)
        lines: list[str] = []
        executor.run_grid(planning.central_jobs(command, exp), 1, lines.append, command.gpus_per_task)
        assert sum("iterations finished (GPU 0)" in line for line in lines) == 4, lines
        for run in (0, 1):
            for method in ("random", "entropy"):
                path = Path("digits") / "ir10_val20" / f"run{run}" / "unsup0" / method / "metrics.jsonl"
                assert timeless(read_lines(tmp_path / "ray" / path)) == timeless(read_lines(tmp_path / "local" / path))
    finally:
        ray.shutdown()
