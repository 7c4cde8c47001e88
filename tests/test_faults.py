"""The distributed modes under a new user's mistakes: flags of another mode, bad Ray addresses, values that
look like flags, damaged files of finished asynchronous runs, and local deployments that cannot start or
whose run fails. (Signals and silent clients of a real simulation: tests/test_federated.py.)
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import planning
import run as run_module
from asynchronous.driver import InProcess, run_asynchronous
from common.errors import UserError
from common.records import queries_problem
from conftest import REPO_ROOT, assert_one_line_error, flower_processes, planned_asynchronous_run
from federated.local_deployment import FIRST_NODE_PORT, busy_ports, run_failure

TINY = ["--dataset", "digits", "--runs", "1", "--epochs", "1", "--device", "cpu", "--threads", "1", "--quiet",
        "--methods", "entropy", "--budget", "10", "--iterations", "2"]


@pytest.mark.parametrize("flags, expected", [
    (["--clients", "3", "--ensemble", "2"], "--ensemble is a flag of central and asynchronous runs"),
    (["--clients", "3", "--train-on-validation"], "--train-on-validation is a flag of central and asynchronous"),
    (["--clients", "3", "--sync"], "--sync is a flag of asynchronous runs"),
    (["--clients", "3", "--servers", "2"], "--servers is a flag of asynchronous runs"),
    (["--clients", "3", "--ray-address", "auto"], "--ray-address is a flag of asynchronous runs"),
    (["--sync"], "this command is a central run"),
    (["--servers", "2"], "--servers is a flag of asynchronous runs"),
    (["--rounds", "3"], "--rounds is a flag of federated runs (--clients 2 or more)"),
    (["--async-workers", "2", "--rounds", "3"], "this command is an asynchronous run"),
    (["--async-workers", "2", "--fed-algo", "fedprox"], "--fed-algo is a flag of federated runs"),
    (["--async-workers", "2", "--executor", "ray"], "--executor ray runs a grid of central runs"),
    (["--clients", "2", "--executor", "lockstep"], "--executor lockstep runs a grid of central runs"),
    (["--clients", "100000"], "number of clients"),
    (["--clients", "3", "--budget", "100000"], "larger than the pool"),
    (["--budget", "100000"], "larger than the pool"),
    (["--async-workers", "3", "--trainings", "500"], "exhaust the pool"),
])
def test_a_flag_of_another_mode_is_refused_before_any_file_is_written(run_main, tmp_path, flags, expected):
    line = assert_one_line_error(run_main("--out", tmp_path, *TINY, *flags))
    assert expected in line, line
    assert list(tmp_path.iterdir()) == [], "a refused command left files behind"


def test_flags_given_are_told_from_defaults():
    """Only flags the command line names count as given (a default value never triggers a refusal)."""
    parser = run_module.get_args_parser()
    args = parser.parse_args(["--clients", "3", "--rou", "2", "--alpha=0.5", "--quiet"])
    assert args.given == {"clients", "rounds", "alpha", "quiet"}
    assert planning.command_from(vars(args)).mode == "federated"
    assert parser.parse_args([]).given == frozenset()


def test_one_asynchronous_worker_runs_the_asynchronous_mode(tmp_path):
    flags = [*TINY, "--async-workers", "1", "--query-batch", "10", "--trainings", "2"]
    assert planning.parse(flags).mode == "asynchronous"
    ctx, job, exp = planned_asynchronous_run(tmp_path, *flags)
    assert job.timing.workers == 1 and job.strategies == ("entropy",)
    records = run_asynchronous(ctx, job, exp.options, lambda _actors: InProcess())
    assert [r["labelled"] for r in records] == [10, 20] and all(r["workers"] == 1 for r in records)


@pytest.mark.parametrize("flags, expected", [
    (["--latency", "-1:3"], "expected LO:HI seconds with 0 <= LO <= HI, got '-1:3'"),
    (["--latency", "-5"], "got '-5'"),
    (["--ray-address", "nonsense"], "--ray-address 'nonsense': expected auto, local, HOST:PORT"),
    (["--ray-address", "127.0.0.1:99999"], "expected auto, local, HOST:PORT"),
])
def test_bad_asynchronous_values_are_one_line(run_main, tmp_path, flags, expected):
    line = assert_one_line_error(run_main("--out", tmp_path, *TINY, "--async-workers", "2", *flags))
    assert expected in line, line


def test_a_ray_address_nothing_listens_on_is_one_line_at_once(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "run.py", "--out", str(tmp_path), *TINY, "--async-workers", "2",
                             "--ray-address", f"127.0.0.1:{port}"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert "no Ray cluster answers there" in assert_one_line_error(result)


# ----------------------------------------------------------------------------------- asynchronous files
@pytest.fixture(scope="module")
def finished_async(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("async")
    in_process(out)
    return out


def in_process(out: Path) -> list[dict]:
    ctx, job, exp = planned_asynchronous_run(out, *TINY, "--async-workers", "2", "--query-batch", "5",
                                             "--trainings", "2")
    return run_asynchronous(ctx, job, exp.options, lambda _actors: InProcess())


@pytest.mark.parametrize("damage, expected", [
    ("duplicated request", "request 0 of worker"),
    ("index twice", "an image labelled twice"),
    ("index outside the pool", "not in the run's pool"),
    ("truncated acquired file", "corrupted index file"),
    ("no shards", "shards.npz is missing"),
])
def test_a_damaged_file_of_a_finished_asynchronous_run_is_refused(finished_async, tmp_path, damage, expected):
    out = tmp_path / "out"
    subprocess.run(["cp", "-r", str(finished_async), str(out)], check=True)
    (folder,) = out.glob("digits/*_async-*/run0/unsup0/entropy")
    queries = (folder / "queries.jsonl").read_text().splitlines()
    acquired = np.load(folder / "acquired_001.npy")
    if damage == "duplicated request":
        (folder / "queries.jsonl").write_text("\n".join([queries[0], *queries]) + "\n")
    elif damage == "index twice":
        first = json.loads(queries[0])
        twice = {**json.loads(queries[1]), "indices": first["indices"][:1] + json.loads(queries[1])["indices"][1:]}
        (folder / "queries.jsonl").write_text("\n".join([queries[0], json.dumps(twice), *queries[2:]]) + "\n")
    elif damage == "index outside the pool":
        np.save(folder / "acquired_001.npy", np.concatenate([acquired[:-1], [10**6]]))
    elif damage == "truncated acquired file":
        (folder / "acquired_001.npy").write_bytes((folder / "acquired_001.npy").read_bytes()[:100])
    else:
        (folder / "shards.npz").unlink()
    with pytest.raises(UserError, match=expected) as raised:
        in_process(out)
    assert str(folder) in str(raised.value)


def test_run_plot_refuses_a_queries_file_that_labels_an_image_twice(finished_async, tmp_path):
    out = tmp_path / "out"
    subprocess.run(["cp", "-r", str(finished_async), str(out)], check=True)
    (path,) = out.glob("digits/*_async-*/run0/unsup0/entropy/queries.jsonl")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[-1]]) + "\n")
    plotted = subprocess.run([sys.executable, "run_plot.py", "--dataset", "digits", "--out", str(out)], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=300)
    assert "queries.jsonl" in assert_one_line_error(plotted)


@pytest.mark.parametrize("lines, expected", [
    ([(0, 0, [1, 2]), (1, 0, [3]), (0, 1, [4])], None),
    ([(0, 0, [1, 2]), (0, 0, [3])], (2, "request 0 of worker 0 where request 1 belongs")),
    ([(0, 1, [1])], (1, "request 1 of worker 0 where request 0 belongs")),
    ([(0, 0, [1, 2]), (1, 0, [2])], (2, "an image labelled twice")),
    ([(0, 0, [5, 5])], (1, "an image labelled twice")),
])
def test_queries_problem(lines, expected):
    assert queries_problem([{"worker": w, "query": q, "indices": i} for w, q, i in lines]) == expected


# ----------------------------------------------------------------------------------- local deployment
def deploy(args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "federated.local_deployment", "--args", args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, expected", [
    ("--methods badge", "unknown federated method 'badge'"),
    ("--budget 100000", "larger than the pool"),
    ("--ensemble 2", "--ensemble is a flag of central"),
])
def test_a_deployment_with_bad_flags_fails_before_any_daemon_starts(tmp_path, args, expected):
    result = deploy(f"--dataset digits --clients 2 --runs 1 --out {tmp_path} --device cpu --quiet {args}")
    assert expected in assert_one_line_error(result)
    assert flower_processes() == ""


def test_a_deployment_on_a_busy_port_names_the_port(tmp_path):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", FIRST_NODE_PORT))
        taken.listen()
        assert busy_ports([FIRST_NODE_PORT]) == [FIRST_NODE_PORT]
        result = deploy(f"--dataset digits --clients 2 --runs 1 --iterations 1 --budget 10 --out {tmp_path} "
                        f"--device cpu --quiet")
    line = assert_one_line_error(result)
    assert f"port {FIRST_NODE_PORT} on 127.0.0.1 already in use" in line
    assert flower_processes() == ""


def test_a_failed_deployed_run_is_told_by_its_own_line():
    """`flwr run --stream` exits 0 when the ServerApp raised; its output tells."""
    def finished(code: int, output: str) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess([], code, stdout=output, stderr="")

    assert run_failure(finished(0, "INFO: run 5 finished\nExit Code: 0\n")) is None
    assert run_failure(finished(0, "Traceback ...\nrun.py: error: cycle 0: no client answered\nExit Code: 201\n")) \
        == "cycle 0: no client answered"
    assert run_failure(finished(0, "Traceback ...\nValueError: boom\nExit Code: 201\n")) == \
        "the deployed run failed (exit code 201)"
    assert run_failure(finished(1, "")) == "the deployed run failed (exit code 1)"


@pytest.mark.slow
def test_a_deployed_run_that_fails_on_the_server_exits_non_zero(tmp_path):
    """A real SuperLink and two SuperNodes; the ServerApp stops (no client answers in 1 microsecond): the
    command exits 2 with the run's own line and names the kept logs; no Flower process is left."""
    result = deploy(f"--dataset digits --clients 2 --runs 1 --iterations 1 --budget 10 --rounds 1 --local-epochs 1 "
                    f"--out {tmp_path / 'out'} --device cpu --threads 1 --quiet --client-timeout 1e-6", timeout=600)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert "cycle 0: no client answered the acquisition query" in line and "logs: " in line
    logs = Path(line.rsplit("logs: ", 1)[1].rstrip(")"))
    assert (logs / "superlink.log").exists() and (logs / "run.log").exists()
    assert flower_processes() == ""
