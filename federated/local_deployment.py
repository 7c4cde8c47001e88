"""A real Flower deployment on this machine: a SuperLink and N SuperNodes on 127.0.0.1 (insecure), then
`flwr run . local --stream` with a run.py command line, then every process it started is stopped.

    python -m federated.local_deployment --args "--dataset digits --clients 2 --methods entropy ..."

The run.py flags are checked (and the runs planned) before any daemon starts, the ports are checked
to be free, and a run that fails on the server exits non-zero with the run's own one-line error; the
daemons' logs of a failed deployment are kept (their folder is named).

On a network, start the same processes on their machines instead (docs/federated.md, "Federated deployment").
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from common.cli import OneLineErrorParser

REPO = Path(__file__).resolve().parent.parent
SUPERLINK_ADDRESS = "127.0.0.1:8000"
SUPERLINK_PORTS = (8000, 9092, 9093)  # its API (the SuperNodes' address), the Fleet API, the Control API
FIRST_NODE_PORT = 9094
START_SECONDS = 60.0
RUN_ERROR = re.compile(r"^run\.py: error: .*$", re.MULTILINE)  # the ServerApp's own line (federated/app.py)
EXIT_CODE = re.compile(r"Exit Code: (\d+)")


class DeploymentError(Exception):
    """The deployment could not start or its run failed; the message is one line."""


def busy_ports(ports) -> list[int]:
    """Those of `ports` that something on 127.0.0.1 already listens on."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def run_failure(result: subprocess.CompletedProcess) -> str | None:
    """What went wrong with a finished `flwr run --stream` (it exits 0 when the ServerApp raised), or None."""
    output = result.stdout + result.stderr
    codes = [int(code) for code in EXIT_CODE.findall(output)]
    if result.returncode == 0 and not any(codes):
        return None
    own = RUN_ERROR.findall(output)
    if own:
        return own[-1].removeprefix("run.py: error: ")
    return f"the deployed run failed (exit code {next((c for c in codes if c), result.returncode)})"


def _tool(name: str) -> str:
    """A Flower executable of this Python environment."""
    return str(Path(sys.executable).parent / name)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found += children
        frontier += children
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextmanager
def daemon(command: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Start `command` in its own process group; on exit stop the whole group and every process below it
    (superexec and the app processes it starts, some in sessions of their own), and wait until they are gone."""
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            yield process
        finally:
            below = descendants(process.pid)
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                for pid in below:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + wait
                while (process.poll() is None or any(map(_alive, below))) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if process.poll() is not None and not any(map(_alive, below)):
                    break


def _wait_for(log: Path, text: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_SECONDS
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise DeploymentError(f"{Path(process.args[0]).name} did not start; its log: {log}")
        time.sleep(0.5)


def run_config(run_args: str) -> str:
    """The --run-config override carrying a run.py command line (a TOML basic string)."""
    escaped = run_args.replace("\\", "\\\\").replace('"', '\\"')
    return f'args="{escaped}"'


def deploy(run_args: str, clients: int, workdir: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run `run_args` (a run.py command line) on a local SuperLink with `clients` SuperNodes; the streamed
    output is also written to workdir/run.log."""
    busy = busy_ports([*SUPERLINK_PORTS, *range(FIRST_NODE_PORT, FIRST_NODE_PORT + clients)])
    if busy:
        raise DeploymentError(f"port{'s' if len(busy) > 1 else ''} {', '.join(map(str, busy))} on 127.0.0.1 "
                              f"already in use (the SuperLink needs {', '.join(map(str, SUPERLINK_PORTS))}, the "
                              f"SuperNodes {FIRST_NODE_PORT} on); stop what uses them")
    home = workdir / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
                                      f'address = "{SUPERLINK_ADDRESS}"\ninsecure = true\n')
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with ExitStack() as stack:
        link_log = workdir / "superlink.log"
        link = stack.enter_context(daemon(
            [_tool("flower-superlink"), "--insecure", "--disable-runtime-dependency-installation"], link_log, env))
        _wait_for(link_log, "Uvicorn running", link)
        for partition in range(clients):
            node_log = workdir / f"supernode{partition}.log"
            node = stack.enter_context(daemon(
                [_tool("flower-supernode"), "--insecure", "--superlink", SUPERLINK_ADDRESS,
                 "--port", str(FIRST_NODE_PORT + partition),
                 "--node-config", f"partition-id={partition} num-partitions={clients}"], node_log, env))
            _wait_for(node_log, "SuperNode ID", node)
        result = subprocess.run(
            [_tool("flwr"), "run", str(REPO), "local", "--stream", "--run-config", run_config(run_args)],
            env=env, capture_output=True, text=True, timeout=timeout,
        )
        (workdir / "run.log").write_text(result.stdout + result.stderr)
        return result


def check_run(run_args: str) -> int:
    """Parse and plan the run.py command line as run.py would (a mistake is run.py's one-line error, exit 2,
    before any daemon starts); returns its client count."""
    import planning  # noqa: PLC0415  (run.py's own parser and planning)
    from common.errors import UserError  # noqa: PLC0415

    command = planning.parse(shlex.split(run_args))
    if not command.federated.enabled:
        raise DeploymentError("--args must run federated: give --clients 2 or more")
    try:
        planning.federated_jobs(command, planning.experiment(command))
    except UserError as error:
        raise DeploymentError(str(error)) from None
    return command.federated.clients


def main() -> None:
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                prog="local_deployment")
    parser.add_argument("--args", required=True, help="the run.py command line to deploy (with --clients N)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Flower home and logs (default: a temporary folder, kept only when the deployment fails)")
    options = parser.parse_args()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="fkal-deployment-"))
    try:
        result = deploy(options.args, check_run(options.args), workdir)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        failure = run_failure(result)
        if failure:
            raise DeploymentError(f"{failure} (logs: {workdir})")
    except DeploymentError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except subprocess.TimeoutExpired as error:
        print(f"{parser.prog}: error: the deployed run took more than {error.timeout:.0f}s (logs: {workdir})",
              file=sys.stderr)
        sys.exit(2)
    if options.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
