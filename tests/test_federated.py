"""Federated AL on Flower's simulation engine (tiny: digits, 3 clients, 2 cycles x 2 rounds).

The simulations start Ray, so they are few and shared: one run of five methods through run.py, a
second of the same seed (identical results), one with failing clients, KCFU and FedProx, and a
resumed run. The privacy rule is checked on every reply of each of them (messages_checked).
"""
from __future__ import annotations

import fcntl
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from PIL import Image

from common.datasets import DATASETS, Split
from common.errors import UserError
from common.experiment import Protocol, draw_split
from common.images import take
from common.records import metrics_problem
from common.seeding import numpy_rng
from common.strategies import STRATEGIES, AcquisitionOptions, AcquisitionState
from conftest import REPO_ROOT, assert_one_line_error, flower_processes, run_cli
from federated.client_app import select_share
from federated.privacy import Audit, PrivacyViolation, reply_problems
from federated.server_app import proportional_shares, untrained_note
from federated.simulation import run_jobs
from federated.task import Federation, Job, client_data, client_pools

def federated_flags(cycles: int = 2) -> list[str]:
    return ["--dataset", "digits", "--clients", "3", "--partition", "dirichlet", "--alpha", "0.5", "--rounds", "2",
            "--local-epochs", "1", "--runs", "1", "--iterations", str(cycles), "--budget", "10", "--device", "cpu",
            "--threads", "1", "--quiet"]


FLAGS = federated_flags()
METHODS = "random,entropy,ksas,logo,fk-nn"
FEDERATION = "c3-dirichlet-a0.5-fedavg-r2-e1"
RUN = Path("digits") / f"ir10_val20_fed-{FEDERATION}" / "run0"


def results(out: Path, method: str, run: Path = RUN) -> tuple[list[dict], list[list[int]], list[dict]]:
    folder = out / run / "unsup0" / method
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    acquired = [np.load(folder / f"acquired_{b:03d}.npy").tolist() for b in range(len(records))]
    rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    return records, acquired, rounds


def timeless(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in records]


@pytest.fixture(scope="module")
def federated_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("federated")
    result = run_cli("--out", out, *FLAGS, "--methods", METHODS, timeout=900)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("method", METHODS.split(","))
def test_simulation_writes_the_results_contract(federated_run, method):
    records, acquired, rounds = results(federated_run, method)
    assert [r["iteration"] for r in records] == [0, 1]
    for record, expected_labelled in zip(records, (10, 20)):
        assert metrics_problem(record) is None
        assert record["labelled"] == expected_labelled == sum(record["client_labelled"])
        assert (record["clients"], record["partition"], record["alpha"], record["fed_algo"]) == (3, "dirichlet", 0.5,
                                                                                                  "fedavg")
        assert (record["rounds"], record["local_epochs"], record["federation"]) == (2, 1, FEDERATION)
        assert record["missing_clients"] == []
    everything = np.concatenate(acquired)
    assert len(everything) == len(np.unique(everything)) == 20, "an image was acquired twice"
    with np.load(federated_run / RUN / "split.npz") as split:
        assert np.isin(everything, split["pool_indices"]).all()
    assert [(line["cycle"], line["round"]) for line in rounds] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert rounds[-1]["test_acc"] == pytest.approx(records[-1]["test_acc"])


def test_every_reply_was_checked_against_the_privacy_rule(federated_run):
    """Per cycle one query and two training replies per client (more queries when FK widens K): every
    one passed the audit, none was skipped."""
    for method in ("random", "entropy", "ksas", "logo"):
        records, _, _ = results(federated_run, method)
        assert [r["messages_checked"] for r in records] == [9, 9], method
    records, _, _ = results(federated_run, "fk-nn")
    assert all(r["messages_checked"] >= 9 for r in records)


def test_score_methods_split_the_budget_by_pool_size(federated_run):
    records, _, _ = results(federated_run, "entropy")
    sizes = np.array([len(part) for part in client_parts(federated_run)])
    assert records[0]["client_labelled"] == proportional_shares(sizes, sizes, 10).tolist()


def client_parts(out: Path) -> list[np.ndarray]:
    return client_parts_of(out / RUN, Federation(clients=3, alpha=0.5))


def test_same_seed_same_results(federated_run, tmp_path):
    result = run_cli("--out", tmp_path, *FLAGS, "--methods", "entropy,ksas,fk-nn", timeout=900)
    assert result.returncode == 0, result.stderr
    for method in ("entropy", "ksas", "fk-nn"):
        first, second = results(federated_run, method), results(tmp_path, method)
        assert second[1] == first[1], f"{method}: other images acquired"
        assert timeless(second[0]) == timeless(first[0]), method
        assert [r["test_acc"] for r in second[2]] == [r["test_acc"] for r in first[2]]


def test_resumed_run_equals_the_uninterrupted_one(federated_run, tmp_path):
    """One cycle, then a kill in the middle of the second (its acquisition and a round already written),
    then the same command with --iterations 2: no acquisition repeated, same results as in one go."""
    assert run_cli("--out", tmp_path, *federated_flags(1), "--methods", "entropy,ksas", timeout=900).returncode == 0
    for method in ("entropy", "ksas"):
        folder = tmp_path / RUN / "unsup0" / method
        np.save(folder / "acquired_001.npy", np.load(folder / "acquired_000.npy"))  # half a cycle on disk
        line = json.loads((folder / "rounds.jsonl").read_text().splitlines()[0])
        with (folder / "rounds.jsonl").open("a") as handle:
            handle.write(json.dumps({**line, "cycle": 1}) + "\n")
    result = run_cli("--out", tmp_path, *FLAGS, "--methods", "entropy,ksas", timeout=900)
    assert result.returncode == 0, result.stderr
    for method in ("entropy", "ksas"):
        first, resumed = results(federated_run, method), results(tmp_path, method)
        assert resumed[1] == first[1] and timeless(resumed[0]) == timeless(first[0]), method
        assert [(r["cycle"], r["round"]) for r in resumed[2]] == [(0, 1), (0, 2), (1, 1), (1, 2)]


def test_failing_clients_are_skipped_and_recorded(federated_run, tmp_path):
    """A client raising in a training round is left out of that round; one raising in a query is
    recorded as missing, and its share is not labelled. KCFU and FedProx clients on the way, and in
    the same simulation FedBN (equal to FedAvg on LeNet, which has no batch norm) and FedAdam."""
    spec = DATASETS.get("digits")
    fed = Federation(clients=3, alpha=0.5, rounds=2, local_epochs=1, local_loss="kcfu", fed_algo="fedprox")
    protocol = Protocol("digits", 10.0, 20, (5, 6, 7, 8, 9), 0, federation=fed.name())
    common = dict(dataset="digits", data_root=None, protocol=protocol, run=0, federation=fed, unsupervised=0,
                  budget=10, cycles=2, schedule=spec.schedule, descriptor_layers=spec.descriptor_layers["l80"],
                  top_k=32, batch_size=512)
    jobs = [Job(method="entropy", fail_client=(1, 0, 2), **common), Job(method="ksas", fail_client=(2, 1, 0), **common)]
    plain = Federation(clients=3, alpha=0.5, rounds=2, local_epochs=1)
    for algo in ("fedbn", "fedadam"):
        fed_algo = Federation(**{**plain.__dict__, "fed_algo": algo})
        jobs.append(Job(**{**common, "federation": fed_algo, "method": "entropy",
                           "protocol": Protocol("digits", 10.0, 20, (5, 6, 7, 8, 9), 0, federation=fed_algo.name())}))
    lines = []
    run_jobs(jobs, tmp_path, lines.append)
    fedbn_run = Path("digits") / f"ir10_val20_fed-{FEDERATION.replace('fedavg', 'fedbn')}" / "run0"
    fedbn, fedavg = results(tmp_path, "entropy", fedbn_run), results(federated_run, "entropy")
    assert fedbn[1] == fedavg[1] and [r["test_acc"] for r in fedbn[0]] == [r["test_acc"] for r in fedavg[0]]
    fedadam_run = Path("digits") / f"ir10_val20_fed-{FEDERATION.replace('fedavg', 'fedadam')}" / "run0"
    fedadam = results(tmp_path, "entropy", fedadam_run)[0]
    assert [r["fed_algo"] for r in fedadam] == ["fedadam"] * 2 and fedadam[1]["test_acc"] != fedavg[0][1]["test_acc"]
    run = Path("digits") / f"ir10_val20_fed-{fed.name()}" / "run0"
    entropy, _, entropy_rounds = results(tmp_path, "entropy+kcfu", run)
    assert [r["labelled"] for r in entropy] == [10, 20] and entropy[0]["local_loss"] == "kcfu"
    assert len(entropy_rounds) == 4
    ksas, acquired, _ = results(tmp_path, "ksas+kcfu", run)
    assert ksas[1]["missing_clients"] == [2] and ksas[0]["missing_clients"] == []
    assert ksas[1]["labelled"] == 10 + len(acquired[1]) < 20
    assert ksas[1]["client_labelled"][2] == ksas[0]["client_labelled"][2]
    assert any("failed" in line for line in lines)


def test_privacy_rule_refuses_what_may_not_leave_a_client():
    weights = {"fc.weight": (2, 3)}
    ok = RecordDict({"arrays": ArrayRecord({"fc.weight": Array(np.zeros((2, 3), np.float32))}),
                     "metrics": MetricRecord({"num-examples": 4, "partition-id": 1})})
    assert reply_problems(ok, weights) == []
    assert reply_problems(RecordDict({"reply": ConfigRecord({"partition-id": 1, "ids": [3, 9],
                                                             "similarities": [0.5, 0.1]})}), weights) == []
    leaks = {
        "images": RecordDict({"arrays": ArrayRecord({"images": Array(np.zeros((4, 1, 28, 28), np.uint8))})}),
        "features": RecordDict({"features": ArrayRecord({"fc.weight": Array(np.zeros((2, 3), np.float32))})}),
        "labels": RecordDict({"metrics": MetricRecord({"partition-id": 1, "labels": [1, 2, 3]})}),
        "logits": RecordDict({"reply": ConfigRecord({"ids": [1, 2], "logits": [0.1, 0.2]})}),
        "bad ids": RecordDict({"reply": ConfigRecord({"ids": [0.5], "similarities": [0.1]})}),
        "unpaired": RecordDict({"reply": ConfigRecord({"ids": [1, 2], "similarities": [0.1]})}),
        "weights of another shape": RecordDict({"arrays": ArrayRecord({"fc.weight": Array(np.zeros((3, 3)))})}),
    }
    for name, content in leaks.items():
        assert reply_problems(content, weights), name
    audit = Audit(weights)
    assert audit.check([Reply(ok), Reply(ok)]) and audit.checked == 2
    with pytest.raises(PrivacyViolation, match="images"):
        audit.check([Reply(ok), Reply(leaks["images"])])


class Reply:
    """What the audit reads of a Flower reply (a real Message needs a running Flower app)."""

    def __init__(self, content: RecordDict) -> None:
        self.content = content

    def has_error(self) -> bool:
        return False


@pytest.mark.parametrize("sizes, available, budget, expected", [
    ([100, 50, 50], [100, 50, 50], 10, [5, 3, 2]),  # largest remainder, ties to the lower partition id
    ([100, 50, 50], [2, 50, 50], 10, [2, 5, 3]),  # a client that runs out passes its share on, the same way
    ([10, 10], [3, 4], 10, [3, 4]),  # never more than is left
])
def test_proportional_shares(sizes, available, budget, expected):
    shares = proportional_shares(np.array(sizes), np.array(available), budget)
    assert shares.tolist() == expected


def test_a_cycle_whose_global_model_is_no_better_than_a_uniform_guess_is_flagged():
    note = untrained_note(2.41, 10)
    assert "WARNING" in note and "2.41 >= ln 10 = 2.30" in note and "--rounds" in note
    assert untrained_note(2.29, 10) == "" and untrained_note(0.5, 2) == ""
    assert "WARNING" in untrained_note(0.70, 2)  # ln 2 = 0.69


def test_plots_and_predictions_from_a_federated_run(federated_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(federated_run, out)
    plotted = subprocess.run([sys.executable, "run_plot.py", "--dataset", "digits", "--out", str(out)], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=300)
    assert plotted.returncode == 0, plotted.stderr
    stem = f"ir10_val20_fed-{FEDERATION}_unsup0"
    assert (out / "digits" / "plots" / f"curves_{stem}.png").stat().st_size > 10_000
    assert (out / "digits" / "plots" / f"rounds_{stem}.png").stat().st_size > 10_000
    assert "ksas" in (out / "digits" / "plots" / f"savings_{stem}.md").read_text()

    test = DATASETS.get("digits").load(None, False)
    Image.fromarray(test.images[0, 0].numpy()).save(tmp_path / "digit.png")
    checkpoint = out / RUN / "unsup0" / "fk-nn" / "model_001.pt"
    predicted = subprocess.run([sys.executable, "predict.py", "--checkpoint", str(checkpoint), str(tmp_path / "digit.png"),
                                "--json"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    (answer,) = json.loads(predicted.stdout)
    assert 0 <= answer["class"] < 10 and 0 < answer["probability"] <= 1


@pytest.mark.parametrize("flags, expected", [
    (["--methods", "vaal"], "federated method"),
    (["--methods", "entropy", "--partition", "pathological", "--classes-per-client", "1"], "pathological"),
    (["--methods", "entropy", "--alpha", "0"], "--alpha"),
    (["--methods", "entropy", "--fed-algo", "fedsgd"], "--fed-algo"),
    (["--methods", "entropy", "--initial"], "--initial"),
])
def test_federated_mistakes_are_one_line(run_main, tmp_path, flags, expected):
    line = assert_one_line_error(run_main("--out", tmp_path, *FLAGS, *flags))
    assert expected in line


def one_client_job(method: str):
    spec = DATASETS.get("digits")
    fed = Federation(clients=1, partition="iid")
    return Job(dataset="digits", data_root=None, protocol=Protocol("digits", 10.0, 20, (5, 6, 7, 8, 9), 0,
                                                                   federation=fed.name()),
               run=0, federation=fed, method=method, unsupervised=0, budget=15, cycles=2, schedule=spec.schedule,
               descriptor_layers=spec.descriptor_layers["l80"], top_k=32, batch_size=512)


@pytest.mark.parametrize("method, cycle, initial_labels", [
    ("entropy", 1, 0), ("margin", 1, 0), ("least-confidence", 1, 0),
    ("entropy", 0, 30),  # a starting set: the first cycle already ranks (no random fallback)
])
def test_one_client_holding_the_pool_selects_what_the_central_strategy_selects(method, cycle, initial_labels):
    job = one_client_job(method)
    job = replace(job, protocol=replace(job.protocol, initial_labels=initial_labels))
    client = client_data(job, 0)
    spec = job.spec
    train = spec.load(None, True)
    split = draw_split(spec, train.labels.numpy(), job.protocol)
    assert np.array_equal(split.pool_indices[client.pool_positions], split.pool_indices), "one client, whole pool"
    torch.manual_seed(3)
    model = spec.model(10, False)
    labelled = np.arange(0, 60, 3)
    chosen = select_share(job, client, model, model, labelled, cycle=cycle, share=15, device=torch.device("cpu"))
    pool = Split(images=take(train.images, split.pool_indices), labels=train.labels[split.pool_indices])
    state = AcquisitionState(
        models=[model], to_input=spec.normalise, pool=pool, unlabelled=np.setdiff1d(np.arange(len(pool)), labelled),
        validation=pool, iteration=cycle, budget=15, rng=numpy_rng(0, "acquire", cycle), seed=0,
        options=AcquisitionOptions(device=torch.device("cpu")), trained_before=True,
    )
    central = STRATEGIES.get(method).select(state)
    assert sorted(chosen.tolist()) == sorted(central.tolist())


@pytest.mark.slow
def test_local_deployment_runs_a_cycle_and_stops_every_process(tmp_path):
    """SuperLink + 2 SuperNodes on 127.0.0.1 (real processes, `flwr run`), one cycle, then nothing left."""
    from federated.local_deployment import deploy

    out = tmp_path / "out"
    args = (f"--dataset digits --clients 2 --methods entropy --iterations 1 --budget 10 --rounds 1 --local-epochs 1 "
            f"--runs 1 --device cpu --threads 1 --quiet --out {out}")
    result = deploy(args, 2, tmp_path / "flower", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (metrics,) = out.glob("digits/*_fed-c2-*/run0/unsup0/entropy/metrics.jsonl")
    (record,) = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert record["labelled"] == 10 and record["clients"] == 2 and metrics_problem(record) is None
    assert flower_processes() == "", "processes left running"


# ----------------------------------------------------------------------------- faults (stops, silent clients)
def file_states(out: Path) -> dict[str, tuple[int, int]]:
    """(size, modification time) of every file below `out`."""
    return {str(path.relative_to(out)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(out.rglob("*")) if path.is_file()}


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """Those of `pids` still running (not zombies) after waiting up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [pid for pid in pids if running(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_simulation_at_once_and_the_resume_equals_an_uninterrupted_run(federated_run, tmp_path,
                                                                                          sig):
    """A signal after the first round's line: exit 130 within seconds with one line, no file written after
    it, the folder's lock free, Ray's processes gone; the same command then ends as an uninterrupted run."""
    command = [sys.executable, "run.py", "--out", str(tmp_path), *FLAGS, "--methods", "entropy"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / RUN / "unsup0" / "entropy"
    deadline = time.monotonic() + 600
    while not ((folder / "rounds.jsonl").exists() and (folder / "rounds.jsonl").read_text().strip()):
        assert process.poll() is None and time.monotonic() < deadline, "no round was written"
        time.sleep(0.1)
    children = children_of(process.pid)
    process.send_signal(sig)
    sent = time.monotonic()
    time.sleep(0.5)
    after_signal = file_states(tmp_path)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and time.monotonic() - sent < 60
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == ["run.py: interrupted; run the same command again to resume"], stderr
    assert file_states(tmp_path) == after_signal, "a file was written after the signal"
    with (folder / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: raises BlockingIOError if still held
    assert children and wait_gone(children, 30) == [], "Ray's processes outlived the run"
    if sig == signal.SIGINT:
        assert run_cli("--out", tmp_path, *FLAGS, "--methods", "entropy", timeout=900).returncode == 0
        first, resumed = results(federated_run, "entropy"), results(tmp_path, "entropy")
        assert resumed[1] == first[1] and timeless(resumed[0]) == timeless(first[0])
        assert [r["test_acc"] for r in resumed[2]] == [r["test_acc"] for r in first[2]]


def test_a_cycle_no_client_answers_is_not_recorded(federated_run, tmp_path):
    """--client-timeout too short for any reply: one line naming the cycle and the clients, exit 2, nothing
    of the cycle on disk; the same command with the default timeout then runs as if nothing happened."""
    line = assert_one_line_error(run_cli("--out", tmp_path, *FLAGS, "--methods", "entropy", "--client-timeout",
                                         "1e-6", timeout=900))
    assert "cycle 0" in line and "clients 0, 1, 2" in line and "no client answered" in line
    folder = tmp_path / RUN / "unsup0" / "entropy"
    assert not (folder / "metrics.jsonl").exists() and not list(folder.glob("acquired_*.npy"))
    assert run_cli("--out", tmp_path, *FLAGS, "--methods", "entropy", timeout=900).returncode == 0
    first, rerun = results(federated_run, "entropy"), results(tmp_path, "entropy")
    assert rerun[1] == first[1] and timeless(rerun[0]) == timeless(first[0])


def tiny_job(method: str, **changes) -> Job:
    spec = DATASETS.get("digits")
    fed = Federation(**{"clients": 3, "alpha": 0.5, "rounds": 2, "local_epochs": 1, **changes.pop("federation", {})})
    protocol = Protocol("digits", 10.0, 20, (5, 6, 7, 8, 9), 0, federation=fed.name())
    return Job(dataset="digits", data_root=None, protocol=protocol, run=0, federation=fed, method=method,
               unsupervised=0, budget=10, cycles=2, schedule=spec.schedule,
               descriptor_layers=spec.descriptor_layers["l80"], top_k=32, batch_size=512, **changes)


def test_a_round_no_client_answers_and_a_diverged_model_stop_the_run(tmp_path):
    """Every client fails round 1 of cycle 1 (each asked twice): one line naming cycle, round and clients, and
    cycle 1 leaves nothing behind (cycle 0 stays). A loss that becomes NaN (FedProx with mu 1e6) stops the run
    naming cycle and round instead of writing NaN (the rounds before it are not kept either)."""
    lines = []
    with pytest.raises(UserError, match=r"cycle 1 round 1: no client answered the training round \(clients 0, 1, 2\)"):
        run_jobs([tiny_job("entropy", fail_client=(-1, 1, 1))], tmp_path, lines.append)
    records, acquired, rounds = results(tmp_path, "entropy")
    assert [r["iteration"] for r in records] == [0] and len(acquired) == 1
    assert [(r["cycle"], r["round"]) for r in rounds] == [(0, 1), (0, 2)]
    assert not (tmp_path / RUN / "unsup0" / "entropy" / "acquired_001.npy").exists()
    diverging = {"fed_algo": "fedprox", "proximal_mu": 1e6, "local_epochs": 3}  # several steps a round: w leaves w_g
    with pytest.raises(UserError, match=r"cycle 0 round \d: the global model's test loss is nan"):
        run_jobs([tiny_job("entropy", federation=diverging)], tmp_path, print)
    diverged = tmp_path / "digits" / "ir10_val20_fed-c3-dirichlet-a0.5-fedprox1000000-r2-e3" / "run0" / "unsup0"
    assert not (diverged / "entropy" / "metrics.jsonl").exists() and not (diverged / "entropy" / "rounds.jsonl").exists()


@pytest.mark.parametrize("damage, expected", [
    ("duplicated round", "line 2: cycle 0 round 1 where cycle 0 round 2 belongs"),
    ("emptied rounds", "end of file: cycle 0 ends at round 0"),
    ("accuracy 2.0", "test_acc is 2.0"),
    ("index twice", "holds an image twice"),
    ("index outside the pool", "not in the run's pool"),
    ("truncated acquired file", "corrupted index file"),
])
def test_a_damaged_file_of_a_finished_federated_run_is_refused(federated_run, tmp_path, damage, expected):
    """Whenever a finished run is touched (rerun, run_plot.py), every file it holds is checked: one line naming
    the file (and the line)."""
    out = tmp_path / "out"
    shutil.copytree(federated_run / RUN / "unsup0" / "entropy", out / RUN / "unsup0" / "entropy")
    for name in ("protocol.json", "split.npz"):
        shutil.copy(federated_run / RUN / name, out / RUN / name)
    folder = out / RUN / "unsup0" / "entropy"
    rounds = (folder / "rounds.jsonl").read_text().splitlines()
    acquired = np.load(folder / "acquired_001.npy")
    if damage == "duplicated round":
        (folder / "rounds.jsonl").write_text("\n".join([rounds[0], *rounds]) + "\n")
    elif damage == "emptied rounds":
        (folder / "rounds.jsonl").write_text("")
    elif damage == "accuracy 2.0":
        (folder / "rounds.jsonl").write_text("\n".join([json.dumps({**json.loads(rounds[0]), "test_acc": 2.0}),
                                                        *rounds[1:]]) + "\n")
    elif damage == "index twice":
        np.save(folder / "acquired_001.npy", np.concatenate([acquired[:-1], acquired[:1]]))
    elif damage == "index outside the pool":
        np.save(folder / "acquired_001.npy", np.concatenate([acquired[:-1], [10**6]]))
    else:
        (folder / "acquired_001.npy").write_bytes((folder / "acquired_001.npy").read_bytes()[:100])
    line = assert_one_line_error(run_cli("--out", out, *FLAGS, "--methods", "entropy", timeout=900))
    assert expected in line and str(folder) in line, line
    if "round" in damage or "accuracy" in damage:
        plotted = subprocess.run([sys.executable, "run_plot.py", "--dataset", "digits", "--out", str(out)],
                                 cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert expected in assert_one_line_error(plotted)


def test_a_starting_set_partial_participation_and_reinitialised_cycles(tmp_path):
    """KAFAL's protocol pieces in one simulation: 30 starting labels shared by pool size and trained on before
    the first acquisition, half the clients per round (all in a cycle's last round), the model re-initialised
    every cycle; LoGo's local-only model and KCFU on the way. A rerun of the finished runs needs no Flower."""
    flags = [*FLAGS, "--methods", "random,logo", "--local-loss", "kcfu", "--initial-labels", "30",
             "--participation", "0.5", "--reinit-each-cycle"]
    assert run_cli("--out", tmp_path, *flags, timeout=900).returncode == 0
    run = Path("digits") / f"ir10_val20_init30_fed-{FEDERATION}-p0.5-reinit" / "run0"
    parts = client_parts_of(tmp_path / run, Federation(clients=3, alpha=0.5))
    shares = proportional_shares(np.array([len(p) for p in parts]), np.array([len(p) for p in parts]), 30)
    for method in ("random+kcfu", "logo+kcfu"):
        records, acquired, rounds = results(tmp_path, method, run)
        assert [(r["labelled"], r["initial_labels"]) for r in records] == [(40, 30), (50, 30)]
        assert all(sum(r["client_labelled"]) == r["labelled"] for r in records)
        assert all(a >= s for a, s in zip(records[0]["client_labelled"], shares))  # the starting set, then more
        weights = rounds[1]["bytes"] // 6  # 2 transfers x 3 clients in a cycle's last round
        assert [line["bytes"] // weights for line in rounds] == [4, 6, 4, 6]  # round 1: 2 of the 3 clients
        assert all(line["missing_clients"] == [] for line in rounds)
    started = time.monotonic()
    again = run_cli("--out", tmp_path, *flags, timeout=900)
    assert again.returncode == 0 and time.monotonic() - started < 60
    assert results(tmp_path, "logo+kcfu", run)[0] == records


def client_parts_of(run_folder: Path, federation: Federation) -> list[np.ndarray]:
    spec = DATASETS.get("digits")
    labels = spec.load(None, True).labels.numpy()
    with np.load(run_folder / "split.npz") as split:
        pool = split["pool_indices"]
    return client_pools(labels[pool], 10, federation, seed=0)
