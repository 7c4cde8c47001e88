"""The results contract, checked in one place: what every stored record and run file must hold.

Writers produce these records (common/experiment.py); every reader (resume, run_plot.py,
visualize.py, benchmarks) reads them through the functions here, so a file of the wrong shape is
refused with one line naming the file and the line, never half-used.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common import storage
from common.errors import UserError
from common.naming import INITIAL_KINDS

Check = Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_fraction_or_nan(value: Any) -> bool:
    """An accuracy: a fraction in [0, 1], or NaN / null where nothing could be measured."""
    return value is None or (_is_number(value) and (math.isnan(value) or 0.0 <= value <= 1.0))


def _is_non_negative_int(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _is_non_negative(value: Any) -> bool:
    return _is_number(value) and value >= 0


def _is_string(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_fraction_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_fraction_or_nan(item) for item in value)


# Every metrics.jsonl line (central, federated and asynchronous runs alike) holds at least these.
METRICS_FIELDS: dict[str, tuple[Check, str]] = {
    "dataset": (_is_string, "a name"),
    "imbalance": (lambda v: _is_number(v) and v >= 1, "a number >= 1"),
    "run": (_is_non_negative_int, "a run index"),
    "seed": (_is_non_negative_int, "a seed"),
    "method": (_is_string, "a method name"),
    "unsupervised": (lambda v: v in range(len(INITIAL_KINDS)) and not isinstance(v, bool), "0, 1 or 2"),
    "iteration": (_is_non_negative_int, "an iteration index"),
    "labelled": (_is_non_negative_int, "a count"),
    "test_acc": (_is_fraction_or_nan, "a fraction"),
    "balanced_acc": (_is_fraction_or_nan, "a fraction"),
    "minority_acc": (_is_fraction_or_nan, "a fraction"),
    "class_acc": (_is_fraction_list, "a list of fractions"),
    "acquire_seconds": (_is_non_negative, "seconds"),
    "train_seconds": (_is_non_negative, "seconds"),
}


def field_problem(record: Mapping, fields: Mapping[str, tuple[Check, str]]) -> str | None:
    """What is wrong with `record` against `fields` (None when nothing is)."""
    missing = [name for name in fields if name not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    for name, (check, expected) in fields.items():
        if not check(record[name]):
            return f"{name} is {record[name]!r}, expected {expected}"
    return None


def metrics_problem(record: Mapping) -> str | None:
    """What is wrong with one metrics.jsonl record (None when it follows the contract); a line of an
    asynchronous run (it names its setting in "asynchronous") must also hold ASYNCHRONOUS_FIELDS."""
    problem = field_problem(record, METRICS_FIELDS)
    if problem is None and "asynchronous" in record:
        problem = field_problem(record, ASYNCHRONOUS_FIELDS)
    return problem


def read_metrics(path: Path) -> list[dict]:
    """Every record of a metrics.jsonl, each checked against the contract ([] when it does not exist)."""
    return storage.read_jsonl(path, metrics_problem)


def object_with_fields(names: set[str]) -> Callable[[Any], str | None]:
    """A check for a JSON file that must be an object holding at least `names`."""

    def problem(content: Any) -> str | None:
        if not isinstance(content, dict):
            return f"expected a JSON object, found {type(content).__name__}"
        missing = sorted(names - set(content))
        return f"missing {', '.join(missing)}" if missing else None

    return problem


# What names the run of a line in a file beside metrics.jsonl (rounds.jsonl, queries.jsonl).
RUN_FIELDS: dict[str, tuple[Check, str]] = {name: METRICS_FIELDS[name]
                                            for name in ("dataset", "imbalance", "run", "method", "unsupervised")}

# Every rounds.jsonl line of a federated run: the global model after one communication round.
ROUNDS_FIELDS: dict[str, tuple[Check, str]] = {
    **RUN_FIELDS,
    "federation": (_is_string, "a federation name"),
    "cycle": (_is_non_negative_int, "a cycle index"),
    "round": (lambda v: _is_int(v) and v >= 1, "a round number >= 1"),
    "test_acc": (_is_fraction_or_nan, "a fraction"),
    "test_loss": (lambda v: _is_number(v) and (math.isnan(v) or v >= 0), "a loss >= 0"),
    "seconds": (_is_non_negative, "seconds"),
    "bytes": (_is_non_negative_int, "a byte count"),
}


def read_rounds(path: Path) -> list[dict]:
    """Every line of a federated run's rounds.jsonl, each checked ([] when it does not exist)."""
    return storage.read_jsonl(path, lambda record: field_problem(record, ROUNDS_FIELDS))


def rounds_problem(lines: list[dict], finished_cycles: int, rounds: int) -> tuple[int, str] | None:
    """(line number, 0 for the file as a whole; what is wrong) with the order of a rounds.jsonl, or None: cycle 0 round 1 first, then
    always the next round or round 1 of the next cycle; each of the `finished_cycles` cycles holds exactly
    `rounds` rounds; only the cycle after them may be unfinished (a run stopped during its training)."""
    expected = (0, 1)
    for number, line in enumerate(lines, start=1):
        found = (line["cycle"], line["round"])
        if found == (expected[0] + 1, 1) and expected[1] == rounds + 1:
            expected = found
        if found != expected:
            due = (expected[0] + 1, 1) if expected[1] > rounds else expected
            return number, f"cycle {found[0]} round {found[1]} where cycle {due[0]} round {due[1]} belongs"
        if found[0] > finished_cycles or found[1] > rounds:
            return number, f"cycle {found[0]} round {found[1]} is past the run's {finished_cycles} finished cycles " \
                           f"of {rounds} rounds"
        expected = (found[0], found[1] + 1)
    if finished_cycles and (expected[0] < finished_cycles - 1 or expected[0] == finished_cycles - 1
                            and expected[1] <= rounds):
        return 0, f"cycle {expected[0]} ends at round {expected[1] - 1}, not {rounds}"
    return None


def check_rounds(path: Path, finished_cycles: int, rounds: int) -> list[dict]:
    """The lines of a federated run's rounds.jsonl, each checked, in the order rounds_problem asks for."""
    lines = read_rounds(path)
    problem = rounds_problem(lines, finished_cycles, rounds)
    if problem:
        where = f"line {problem[0]}" if problem[0] else "end of file"
        raise UserError(f"inconsistent results file {path} ({where}: {problem[1]}); delete the method folder "
                        f"{path.parent} to redo it")
    return lines


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_index_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_non_negative_int(item) for item in value)


# Added to every metrics.jsonl line of an asynchronous run (one line per server training).
ASYNCHRONOUS_FIELDS: dict[str, tuple[Check, str]] = {
    "asynchronous": (_is_string, "an asynchronous setting name"),
    "model_version": (lambda v: _is_int(v) and v >= 1, "a model version >= 1"),
    "sync": (_is_bool, "true or false"),
    "server": (_is_non_negative_int, "a server index"),
    "base_version": (_is_non_negative_int, "a model version"),
    "started_at": (_is_non_negative, "seconds on the run's clock"),
    "published_at": (_is_non_negative, "seconds on the run's clock"),
}

# Every queries.jsonl line of an asynchronous run: one label request of one worker.
QUERIES_FIELDS: dict[str, tuple[Check, str]] = {
    **RUN_FIELDS,
    "asynchronous": (_is_string, "an asynchronous setting name"),
    "sync": (_is_bool, "true or false"),
    "worker": (_is_non_negative_int, "a worker index"),
    "query": (_is_non_negative_int, "the worker's query index"),
    "strategy": (_is_string, "a strategy name"),
    "model_version": (_is_non_negative_int, "a model version"),
    "issued_at": (_is_non_negative, "seconds on the run's clock"),
    "completed_at": (_is_non_negative, "seconds on the run's clock"),
    "simulated_wait": (_is_non_negative, "seconds"),
    "wall_seconds": (_is_non_negative, "seconds"),
    "indices": (_is_index_list, "a list of train-split indices"),
    "workers": (lambda v: _is_int(v) and v >= 1, "a worker count"),
    "servers": (lambda v: _is_int(v) and v >= 1, "a server count"),
    "query_batch": (lambda v: _is_int(v) and v >= 1, "a batch size"),
    "latency_range": (lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_non_negative, v)),
                      "[low, high] seconds"),
}


def read_queries(path: Path) -> list[dict]:
    """Every line of an asynchronous run's queries.jsonl, each checked ([] when it does not exist)."""
    return storage.read_jsonl(path, lambda record: field_problem(record, QUERIES_FIELDS))


def queries_problem(lines: list[dict]) -> tuple[int, str] | None:
    """(line number, what is wrong) with a queries.jsonl as a whole, or None: each worker's requests
    numbered 0, 1, 2, ... in order, and no image labelled twice."""
    next_query: dict[int, int] = {}
    seen: set[int] = set()
    for number, line in enumerate(lines, start=1):
        worker, expected = line["worker"], next_query.get(line["worker"], 0)
        if line["query"] != expected:
            return number, f"request {line['query']} of worker {worker} where request {expected} belongs"
        if seen.intersection(line["indices"]) or len(set(line["indices"])) != len(line["indices"]):
            return number, "an image labelled twice"
        seen.update(line["indices"])
        next_query[worker] = expected + 1
    return None


def check_queries(path: Path) -> list[dict]:
    """The lines of an asynchronous run's queries.jsonl, each checked, and the file as queries_problem asks."""
    lines = read_queries(path)
    problem = queries_problem(lines)
    if problem:
        raise UserError(f"inconsistent results file {path} (line {problem[0]}: {problem[1]}); delete the method "
                        f"folder {path.parent} to redo it")
    return lines
