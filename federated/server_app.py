"""The Flower ServerApp: per AL cycle, one acquisition across the clients, then R rounds of federated
training (a Flower strategy), then the global model's test record.

The server holds the validation and test sets and the run's files (the same results contract and
resume rules as a central run: common/experiment.py and common/loop.py). Clients are addressed by
partition id. Every reply passes the privacy audit (federated/privacy.py).

Acquisition shares: score methods split the budget over the clients in proportion to their pool
sizes (largest remainder, capped by what each has left); FK methods merge every client's
candidates globally into the budget (federated/fk.py). A client that fails or times out in a
query is recorded as missing (`missing_clients`): its share is not given to the others, so that
cycle labels fewer images. A client that fails in a training round is left out of that round's
average (Flower's strategies skip error replies). Missing clients are named in the log, in the round's
line and in the cycle's record. A client whose reply is an error is asked again while --client-timeout
lasts (federated/grid.py); a round or an acquisition that no client answered is not a result: the run
stops with one line naming the cycle and the clients, and nothing of that cycle is kept. So does a
global model whose test loss is not finite (training diverged).

A stop request (Ctrl-C, SIGTERM: federated/grid.py's Stop) ends the server's waits within a poll and
is checked before every write: after it, nothing is written, and the same command resumes.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from common import loop, storage
from common import records as contract
from common.errors import UserError
from common.experiment import (
    INITIAL_KINDS, DatasetArrays, RecordedSettings, RunContext, ensure_initial_models, initial_model_path,
    load_acquired, method_run, metrics_record, prepare_run,
)
from common.method_run import MethodRun, finished_records
from common.seeding import numpy_rng
from common.train import accuracy_report, predict_logits, resolve_device
from federated import fk
from federated.grid import ServerGrid, Stop
from federated.privacy import Audit
from federated.strategies import CLIENT_METHODS, RoundFailed, make_aggregation
from federated.task import Job, array_record, client_pools

DISCOVERY_TIMEOUT = 120.0  # seconds to wait for every client node to connect and say who it is


def proportional_shares(pool_sizes: np.ndarray, available: np.ndarray, budget: int) -> np.ndarray:
    """Split `budget` in proportion to the clients' pool sizes (largest remainder, ties to the lower
    partition id), never more than a client has `available`; what a full client cannot take goes to
    the others the same way."""
    shares = np.zeros(len(pool_sizes), dtype=np.int64)
    remaining = min(budget, int(available.sum()))
    while remaining > 0:
        open_ = (available - shares) > 0
        weights = np.where(open_, pool_sizes, 0).astype(np.float64)
        exact = remaining * weights / weights.sum()
        extra = np.floor(exact).astype(np.int64)
        order = np.lexsort((np.arange(len(exact)), -(exact - extra)))
        extra[order[: remaining - extra.sum()]] += 1
        extra = np.minimum(extra, available - shares)
        shares += extra
        remaining -= int(extra.sum())
    return shares


def initial_client_labels(parts: list[np.ndarray], count: int, seed: int) -> list[np.ndarray]:
    """The starting labelled set of every client (local ids, sorted): `count` images shared in proportion to
    the clients' pool sizes (proportional_shares), each client's drawn at random from its own pool."""
    sizes = np.array([len(part) for part in parts])
    shares = proportional_shares(sizes, sizes, count)
    return [np.sort(numpy_rng(seed, "initial-labels", client).choice(size, size=share, replace=False))
            for client, (size, share) in enumerate(zip(sizes, shares))]


def cycle_name(cycle: int) -> str:
    """How messages name a cycle (-1: the training on the starting set, before the first acquisition)."""
    return f"cycle {cycle}" if cycle >= 0 else "the training on the starting set,"


def untrained_note(test_loss: float, num_classes: int) -> str:
    """A log-line warning when the global model's test loss is no better than a uniform guess's (ln C): an
    undertrained (or overconfident) model, whose accuracy may rank what the network happens to output rather
    than the labels chosen (docs/method.md, "Federated FK at the first cycle")."""
    chance = math.log(num_classes)
    if test_loss < chance:
        return ""
    return (f" WARNING: test loss {test_loss:.2f} >= ln {num_classes} = {chance:.2f}, no better than a uniform guess "
            f"(undertrained or overconfident; more --rounds or --local-epochs may help)")


def settings_that_matter(job: Job) -> dict:
    """What changes a federated method's results beyond its protocol folder (compared on resume)."""
    settings = {"method": job.method, "unsupervised": job.unsupervised, "budget": job.budget,
                "schedule": asdict(job.local_schedule), "local_loss": job.federation.local_loss}
    if CLIENT_METHODS.get(job.method).server_merged:
        settings |= {"descriptor_layers": list(job.descriptor_layers), "top_k": job.top_k}
    return json.loads(json.dumps(settings))  # the JSON form, as stored


def discover_clients(grid: ServerGrid, clients: int) -> dict[int, int]:
    """partition id -> Flower node id, asked of every node (node ids change from run to run)."""
    deadline = time.monotonic() + DISCOVERY_TIMEOUT
    while len(nodes := sorted(grid.get_node_ids())) < clients:
        if time.monotonic() > deadline:
            raise UserError(f"only {len(nodes)} of {clients} client nodes connected in {DISCOVERY_TIMEOUT:.0f}s")
        grid.stop.check()
        time.sleep(0.5)
    messages = [Message(content=RecordDict({"config": ConfigRecord({})}), message_type="query.hello", dst_node_id=node)
                for node in nodes]
    replies = grid.send_and_receive(messages, timeout=DISCOVERY_TIMEOUT)
    found = {int(r.content["metrics"]["partition-id"]): r.metadata.src_node_id for r in replies if not r.has_error()}
    if sorted(found) != list(range(clients)):
        raise UserError(f"client nodes report partitions {sorted(found)}, expected 0..{clients - 1}")
    return found


class FederatedRun:
    """One method's federated AL run on the server, resumable per cycle."""

    def __init__(self, job: Job, grid: ServerGrid | None, nodes: dict[int, int], out: Path, data: DatasetArrays,
                 log: Callable[[str], None]) -> None:
        """`grid` None: a run only looked at (finished_and_checked), never run."""
        self.job, self.grid, self.nodes, self.log = job, grid, nodes, log
        self.spec, self.method = job.spec, CLIENT_METHODS.get(job.method)
        self.device = resolve_device(job.device)
        self.ctx: RunContext = prepare_run(self.spec, data, job.protocol, job.run, out, self.device, log=log)
        self.parts = client_pools(self.ctx.pool.labels.numpy(), self.spec.num_classes, job.federation,
                                  job.protocol.seed)
        self.owner = np.full(len(self.ctx.pool), -1, dtype=np.int64)  # pool position -> client (-1: none)
        self.local = np.empty(len(self.ctx.pool), dtype=np.int64)  # pool position -> the client's local id
        for client, positions in enumerate(self.parts):
            self.owner[positions], self.local[positions] = client, np.arange(len(positions))
        self.method_run: MethodRun = method_run(self.ctx, job.method_folder(out), settings_that_matter(job), job.label,
                                                job.unsupervised)
        self.folder = self.method_run.folder
        self.initial = initial_client_labels(self.parts, job.protocol.initial_labels, job.protocol.seed)
        initial_positions = np.concatenate([part[ids] for part, ids in zip(self.parts, self.initial)])
        self.initial_positions = np.sort(initial_positions).astype(np.int64)
        self.stop: Stop = grid.stop if grid is not None else Stop()
        self.checked_before = grid.audit.checked if grid is not None else 0  # replies that passed the audit
        self.model = self.spec.model(self.spec.num_classes, False)
        self.model_bytes = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        self.recorded = RecordedSettings(method=job.method, unsupervised=job.unsupervised, budget=job.budget)

    # ------------------------------------------------------------------ the run
    def finished_and_checked(self) -> list[dict] | None:
        """The records of a finished run after checking every file it holds, or None when it is not finished
        (a rerun of finished runs needs no simulation)."""
        records = finished_records(self.folder)
        if len(records) < self.job.cycles:
            return None
        self.method_run.check_settings()
        self._checked_files(records)
        return records[: self.job.cycles]

    def run(self) -> list[dict]:
        return self.method_run.resume(self._run)

    def _run(self, records: list[dict]) -> list[dict]:
        job = self.job
        start = min(len(records), job.cycles)
        acquired = self._checked_files(records)  # a finished run's files are checked too, every time
        if start >= job.cycles:
            return records[: job.cycles]
        client_states = self._restore(start)
        labelled = [self.initial[c].tolist() + self.local[acquired[self.owner[acquired] == c]].tolist()
                    for c in range(job.federation.clients)]
        self._forget_rounds_from(start)  # a half-finished cycle's rounds are redone
        if start == 0 and len(self.initial_positions):  # the starting set trains the first acquisition's model
            client_states, _ = self._train(-1, labelled)
        for cycle in range(start, job.cycles):
            try:
                records.append(self._cycle(cycle, labelled, client_states))
            except UserError:
                with self.stop.writing():  # a failed cycle leaves nothing behind
                    self._forget_rounds_from(cycle)
                    (self.folder / f"acquired_{cycle:03d}.npy").unlink(missing_ok=True)
                raise
            client_states = self.client_states
        return records

    def _cycle(self, cycle: int, labelled: list[list[int]], client_states: dict) -> dict:
        """One AL cycle: acquire, R rounds of training, the record; `labelled` grows in place."""
        job, ctx = self.job, self.ctx
        began = time.perf_counter()
        chosen, missing, query_bytes = self._acquire(cycle, labelled, client_states)
        acquire_seconds = time.perf_counter() - began
        with self.stop.writing():
            loop.save_acquired(self.folder, cycle, ctx.split.pool_indices[chosen])
        for position in chosen:
            labelled[self.owner[position]].append(int(self.local[position]))
        if job.federation.reinit_each_cycle:  # KAFAL and LoGo train every cycle from scratch
            self.model.load_state_dict(self.initial_state)
        began = time.perf_counter()
        self.client_states, round_missing = self._train(cycle, labelled)
        train_seconds = time.perf_counter() - began
        record = self._record(cycle, labelled, missing, acquire_seconds, train_seconds, query_bytes)
        _, test_loss = self._evaluate_with_loss()
        extra = {"client_states": self.client_states} if self.method.uses_local_model else {}
        with self.stop.writing():
            loop.save_iteration(self.folder, cycle, [self.model], record, extra=extra)
        absent = "".join(f" missing: {what} {clients}" for what, clients in
                         [("query", missing)] + [(f"round {r}", c) for r, c in sorted(round_missing.items())] if clients)
        self.method_run.log_step(f"cycle={cycle}", record, absent + untrained_note(test_loss, self.spec.num_classes))
        return record

    # ------------------------------------------------------------------ files
    def _checked_files(self, records: list[dict]) -> np.ndarray:
        """Pool positions acquired by the finished cycles, in order, after checking every file they left:
        the acquired files (members of the pool, never twice, each in a client's pool and counted in that
        client's `client_labelled`), and rounds.jsonl (every finished cycle's rounds, once each, in order)."""
        job = self.job
        acquired = load_acquired(self.ctx, self.folder, records, job.budget, exact=False,
                                 initial=self.initial_positions)
        counts = np.array([len(ids) for ids in self.initial], dtype=np.int64)
        done = 0
        for cycle, record in enumerate(records):
            new = record["labelled"] - int(counts.sum())
            positions, done = acquired[done: done + new], done + new
            path = self.folder / f"acquired_{cycle:03d}.npy"
            if (self.owner[positions] < 0).any():
                raise UserError(f"inconsistent results: {path} holds images outside every client's pool; delete the "
                                f"method folder {self.folder} to redo it")
            counts += np.bincount(self.owner[positions], minlength=job.federation.clients)
            if record.get("client_labelled", counts.tolist()) != counts.tolist():
                raise UserError(f"inconsistent results: {path} does not match client_labelled of cycle {cycle} in "
                                f"{self.folder / 'metrics.jsonl'}; delete the method folder to redo it")
        contract.check_rounds(self.folder / "rounds.jsonl", min(len(records), job.cycles), job.federation.rounds)
        return acquired

    def _forget_rounds_from(self, cycle: int) -> None:
        """Keep only the rounds.jsonl lines of cycles before `cycle`."""
        path = self.folder / "rounds.jsonl"
        lines = contract.read_rounds(path)
        kept = [line for line in lines if line["cycle"] < cycle]
        if len(kept) < len(lines):
            path.unlink()
            for line in kept:
                storage.append_jsonl(path, line)

    def _restore(self, start: int) -> dict:
        """Load the run's initial weights, the global model (those, or the last finished cycle's) and the
        clients' local models."""
        kind = INITIAL_KINDS[self.job.unsupervised]
        ensure_initial_models(self.ctx, 1, kinds=(kind,))
        self.initial_state = storage.load_checkpoint(initial_model_path(self.ctx, kind, 0), "state")
        if start == 0:
            self.model.load_state_dict(self.initial_state)
            return {}
        checkpoint = self.method_run.restore(start - 1)
        self.model.load_state_dict(checkpoint["states"][0])
        return {int(k): v for k, v in checkpoint.get("client_states", {}).items()}

    # ------------------------------------------------------------------ acquisition
    def _query(self, clients: list[int], labelled: list[list[int]], cycle: int, fields: dict,
               records: dict[int, dict] | None = None) -> dict[int, ConfigRecord]:
        """Send one query message per client; the replies that came back, by partition id (none at all
        stops the run)."""
        global_weights = ArrayRecord(self.model.state_dict())
        messages = []
        for client in clients:
            config = ConfigRecord({"job": self.job.to_json(), "cycle": cycle, f"labelled-{client}": labelled[client],
                                   **fields.get(client, fields.get("all", {}))})
            content = {"arrays": global_weights, "config": config, **(records or {}).get(client, {})}
            messages.append(Message(content=RecordDict(content), message_type="query",
                                    dst_node_id=self.nodes[client]))
        replies = self.grid.send_and_receive(messages, timeout=self.job.client_timeout)
        answered = {}
        for reply in replies:
            if reply.has_error():
                self.log(f"cycle {cycle}: a client failed its query: {reply.error.reason}")
                continue
            answered[int(reply.content["reply"]["partition-id"])] = reply.content["reply"]
        if not answered:
            raise UserError(f"cycle {cycle}: no client answered the acquisition query (clients "
                            f"{', '.join(map(str, clients))}) within --client-timeout {self.job.client_timeout:g}s; "
                            f"nothing of the cycle was kept, run the same command again to resume")
        return answered

    def _acquire(self, cycle: int, labelled: list[list[int]], client_states: dict) -> tuple[np.ndarray, list[int], int]:
        """Pool positions acquired this cycle, the clients that did not answer, and the bytes sent."""
        clients = list(range(self.job.federation.clients))
        if self.method.server_merged:
            chosen, answered, sent = self._acquire_fk(cycle, labelled, clients)
        else:
            chosen, answered, sent = self._acquire_shares(cycle, labelled, clients, client_states)
        missing = [c for c in clients if c not in answered]
        positions = np.array([self.parts[c][i] for c, i in chosen], dtype=np.int64)
        return positions, missing, sent

    def _acquire_shares(self, cycle, labelled, clients, client_states):
        sizes = np.array([len(part) for part in self.parts])
        available = sizes - np.array([len(ids) for ids in labelled])
        shares = proportional_shares(sizes, available, self.job.budget)
        records = {c: {"local": ArrayRecord(client_states[c])} for c in clients
                   if self.method.uses_local_model and c in client_states}
        replies = self._query(clients, labelled, cycle, {c: {"share": int(shares[c])} for c in clients}, records)
        chosen = [(c, int(i)) for c in sorted(replies) for i in replies[c]["ids"]]
        sent = self.model_bytes * (1 + int(bool(records)))
        return chosen, replies, sent

    def _acquire_fk(self, cycle, labelled, clients):
        job = self.job
        centres = fk.server_centres(
            self.model, self.ctx.validation, self.spec.normalise, job.descriptor_layers, self.device, job.budget,
            numpy_rng(job.protocol.seed, "acquire", cycle), with_gradients=self.method.pseudo_label is not None,
            batch_size=job.batch_size,
        )
        centre_record = array_record(centres.to_arrays())
        top_k, sent = job.top_k, 0
        while True:
            replies = self._query(clients, labelled, cycle, {"all": {"top-k": top_k}},
                                  {c: {"centres": centre_record} for c in clients})
            sent += self.model_bytes + centres.nbytes
            candidates = {
                c: fk.Candidates(ids=np.asarray(r["ids"], dtype=np.int64).reshape(len(centres.labels), -1),
                                 similarities=np.asarray(r["similarities"], dtype=np.float32)
                                 .reshape(len(centres.labels), -1))
                for c, r in replies.items()
            }
            if not candidates:
                return [], replies, sent
            chosen, filled = fk.merge_candidates(candidates, job.budget)
            if filled or all(c.lists_whole_pool for c in candidates.values()):
                return chosen, replies, sent
            top_k *= 2

    # ------------------------------------------------------------------ training and evaluation
    def _train(self, cycle: int, labelled: list[list[int]]) -> tuple[dict, dict[int, list[int]]]:
        """R rounds of the federated strategy from the current global model (cycle -1: on the starting set,
        before the first acquisition; its rounds are not recorded); returns the clients' last local weights
        (KSAS queries them next cycle) and the clients missing from each round."""
        job, federation = self.job, self.job.federation
        strategy = make_aggregation(federation.fed_algo, self.nodes, federation.proximal_mu,
                                    lambda r: federation.sampled(job.protocol.seed, cycle, r))
        config = ConfigRecord({"job": job.to_json(), "cycle": cycle,
                               **{f"labelled-{c}": ids for c, ids in enumerate(labelled)}})
        round_started = [time.perf_counter()]

        def evaluate_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round == 0:
                return None
            self.model.load_state_dict(arrays.to_torch_state_dict())
            report, loss = self._evaluate_with_loss()
            if not math.isfinite(loss) or not all(torch.isfinite(t).all() for t in self.model.state_dict().values()):
                raise UserError(f"{cycle_name(cycle)} round {server_round}: the global model's test loss is {loss} (training "
                                f"diverged; a smaller --proximal-mu or fewer --local-epochs may help); nothing of the "
                                f"cycle was kept")
            missing = strategy.missing.get(server_round, [])
            if cycle < 0:  # the starting set's training is not a cycle of the curve
                return MetricRecord({"test_acc": report["test_acc"], "test_loss": loss})
            line = {"dataset": self.spec.name, "imbalance": self.ctx.protocol.imbalance, "run": self.ctx.run,
                    "method": job.method, "local_loss": job.federation.local_loss, "unsupervised": job.unsupervised,
                    "federation": job.federation.name(), "val_per_class": self.ctx.protocol.val_per_class,
                    "cycle": cycle, "round": server_round, "test_acc": report["test_acc"], "test_loss": loss,
                    "seconds": round(time.perf_counter() - round_started[0], 4),
                    "bytes": 2 * self.model_bytes * len(strategy.sampled(server_round)),
                    "missing_clients": missing}
            with self.stop.writing():
                storage.append_jsonl(self.folder / "rounds.jsonl", line)
            round_started[0] = time.perf_counter()
            return MetricRecord({"test_acc": report["test_acc"], "test_loss": loss})

        try:
            result = strategy.start(grid=self.grid, initial_arrays=ArrayRecord(self.model.state_dict()),
                                    num_rounds=job.federation.rounds, timeout=job.client_timeout, train_config=config,
                                    evaluate_fn=evaluate_round)
        except RoundFailed as failed:
            raise UserError(f"{cycle_name(cycle)} round {failed.server_round}: no client answered the training round "
                            f"(clients {', '.join(map(str, failed.missing))}) within --client-timeout "
                            f"{job.client_timeout:g}s; nothing of the cycle was kept, run the same command again to "
                            f"resume") from None
        if len(result.arrays):
            self.model.load_state_dict(result.arrays.to_torch_state_dict())
        states = {c: arrays.to_torch_state_dict() for c, arrays in getattr(strategy, "client_arrays", {}).items()}
        return states, {r: c for r, c in strategy.missing.items() if c}

    def _evaluate_with_loss(self) -> tuple[dict, float]:
        test = self.ctx.test
        logits = predict_logits(self.model, test.images, self.spec.normalise, self.device)
        report = accuracy_report(logits.argmax(dim=1).numpy(), test.labels.numpy(), self.spec.num_classes,
                                 self.ctx.protocol.minority_classes)
        return report, float(F.cross_entropy(logits, test.labels))

    def _record(self, cycle, labelled, missing, acquire_seconds, train_seconds, query_bytes) -> dict:
        federation = self.job.federation
        uses_validation = self.method.server_merged
        record = metrics_record(self.ctx, self.recorded, cycle, sum(map(len, labelled)),
                                len(self.ctx.validation) if uses_validation else 0, [self.model],
                                acquire_seconds, train_seconds)
        return {**record, "clients": federation.clients, "partition": federation.partition, "alpha": federation.alpha,
                "fed_algo": federation.fed_algo, "rounds": federation.rounds, "local_epochs": federation.local_epochs,
                "local_loss": federation.local_loss, "federation": federation.name(),
                "client_labelled": [len(ids) for ids in labelled], "missing_clients": missing,
                "bytes_per_client": int(query_bytes + 2 * self.model_bytes * federation.rounds),
                "messages_checked": self._checked_this_cycle()}

    def _checked_this_cycle(self) -> int:
        checked, self.checked_before = self.grid.audit.checked - self.checked_before, self.grid.audit.checked
        return checked


def serve(grid: Grid, jobs: list[Job], out: Path, data: Callable[[str, str | None], DatasetArrays],
          log: Callable[[str], None], verbose: bool = False, stop: Stop | None = None) -> None:
    """Run `jobs` in order on the clients behind `grid` (simulated or deployed alike); `stop` ends them."""
    if not verbose:  # Flower logs every round; our own lines say what happened
        logging.getLogger("flwr").setLevel(logging.ERROR)
    spec = jobs[0].spec
    shapes = {k: tuple(v.shape) for k, v in spec.model(spec.num_classes, False).state_dict().items()}
    server_grid = ServerGrid(grid, Audit(shapes), stop)
    nodes = discover_clients(server_grid, jobs[0].federation.clients)
    for job in jobs:
        FederatedRun(job, server_grid, nodes, out, data(job.dataset, job.data_root), log).run()


def make_server_app(jobs: list[Job], out: Path, data: Callable[[str, str | None], DatasetArrays],
                    log: Callable[[str], None], errors: list[BaseException], verbose: bool = False,
                    stop: Stop | None = None, done: threading.Event | None = None) -> ServerApp:
    """The simulation's ServerApp running `jobs` (settings come through this factory: Flower's simulation
    leaves context.run_config empty). An exception is kept in `errors` for the caller to report; `done`
    is set when the server has stopped working (its thread may still be winding down in Flower)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, _context: Context) -> None:
        try:
            serve(grid, jobs, out, data, log, verbose, stop)
        except BaseException as error:  # noqa: BLE001  (reported by the caller, in the main thread)
            errors.append(error)
        finally:
            if done is not None:
                done.set()

    return app
