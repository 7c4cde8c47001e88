"""A real Flower deployment on this machine: a SuperLink and N SuperNodes on 127.0.0.1 (insecure), then
`flwr run . local --stream` with a run.py command line, then every process it started is stopped.

    python -m federated.local_deployment --args "--dataset digits --clients 2 --methods entropy ..."

On a network, start the same processes on their machines instead (README "Federated deployment").
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
SUPERLINK_ADDRESS = "127.0.0.1:8000"
FIRST_NODE_PORT = 9094
START_SECONDS = 60.0


def _tool(name: str) -> str:
    """A Flower executable of this Python environment."""
    return str(Path(sys.executable).parent / name)


@contextmanager
def daemon(command: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Start `command` in its own process group; on exit stop the whole group (its superexec children too)."""
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            yield process
        finally:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue


def _wait_for(log: Path, text: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_SECONDS
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args[0]} did not start; see {log}")
        time.sleep(0.5)


def run_config(run_args: str) -> str:
    """The --run-config override carrying a run.py command line (a TOML basic string)."""
    escaped = run_args.replace("\\", "\\\\").replace('"', '\\"')
    return f'args="{escaped}"'


def deploy(run_args: str, clients: int, workdir: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run `run_args` (a run.py command line) on a local SuperLink with `clients` SuperNodes."""
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
        return subprocess.run(
            [_tool("flwr"), "run", str(REPO), "local", "--stream", "--run-config", run_config(run_args)],
            env=env, capture_output=True, text=True, timeout=timeout,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--args", required=True, help="the run.py command line to deploy (with --clients N)")
    parser.add_argument("--workdir", type=Path, default=None, help="Flower home and logs (default: a temporary folder)")
    options = parser.parse_args()
    import run  # noqa: PLC0415  (run.py's own parser reads the command line)

    clients = run.get_args_parser().parse_args(shlex.split(options.args)).clients
    if clients < 2:
        parser.error("--args must run federated: give --clients 2 or more")
    with tempfile.TemporaryDirectory() as scratch:
        result = deploy(options.args, clients, options.workdir or Path(scratch))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
