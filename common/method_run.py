"""One method's run folder, the same in every mode: central AL, the all-train reference, federated and
asynchronous runs all live by these rules.

    <run folder>/unsup<U>/<label>/  .lock            held by the process working on the run (others skip it)
                                    settings.json    what changes the results (checked on resume)
                                    metrics.jsonl    one record per finished step (iteration, cycle, training)
                                    ...              the mode's own files (acquired_<B>.npy, model_<B>.pt, ...)

`MethodRun.resume(body)` takes the folder's lock (another process holding it: the run is skipped and its
finished records returned), removes what a killed process left (temporaries, the descriptor scratch),
checks `settings.json` against the current settings, and hands the finished records to `body`, which
goes on from there. The record of a step is logged by `log_step`, one line format for every mode.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common import records as contract
from common import storage
from common.errors import UserError


def finished_records(folder: Path) -> list[dict]:
    """The records of `folder`'s finished steps (each checked against the results contract), in order."""
    records = contract.read_metrics(folder / "metrics.jsonl")
    steps = [r["iteration"] for r in records]
    if steps != list(range(len(records))):
        raise UserError(f"{folder / 'metrics.jsonl'} is out of order ({steps}); fix or delete it")
    return records


def check_settings(folder: Path, current: dict, write: bool = True, later_defaults: dict | None = None) -> None:
    """Refuse to continue a run with other settings (`current`: JSON form of those that matter); a run with no
    finished step restarts (its settings.json is written, unless not `write`). `later_defaults`: settings added
    in later versions, at their defaults, as older files are read."""
    path = folder / "settings.json"
    if path.exists() and finished_records(folder):
        stored = {**(later_defaults or {}), **storage.read_json(path, contract.object_with_fields({"method"}))}
        changed = sorted(k for k in current if stored.get(k) != current[k])
        if changed:
            raise UserError(f"{folder} was started with other settings ({', '.join(changed)}); use another --out")
    elif write:
        storage.write_json(path, current)


@dataclass(frozen=True)
class MethodRun:
    """A method's run folder and the rules of its life (module docstring)."""

    folder: Path
    settings: dict  # JSON form of the settings that change the results (settings.json)
    prefix: str  # what every log line of the run starts with, e.g. "[digits ir10 u0 fk-nn run0]"
    log: Callable[[str], None]
    write_settings: bool = True  # False: another party writes settings.json (the asynchronous label store)
    later_defaults: dict = field(default_factory=dict)  # check_settings

    def resume(self, body: Callable[[list[dict]], list[dict]]) -> list[dict]:
        """`body(finished records)` with the folder locked and cleaned; its return value, or the finished records
        when another process is working on the run (skipped)."""
        with self.opened() as records:
            return finished_records(self.folder) if records is None else body(records)

    @contextmanager
    def opened(self) -> Iterator[list[dict] | None]:
        """The folder locked and cleaned for as long as the block runs, yielding its finished records, or None
        when another process is working on the run (skipped). `resume` is one run's use; the lockstep executor
        (common/lockstep.py) holds many runs open at once."""
        with storage.exclusive(self.folder) as mine:
            if not mine:
                self.log(f"{self.prefix} {self.folder} is being run by another process; skipped")
                yield None
                return
            storage.remove_stale_temporaries(self.folder)
            shutil.rmtree(self.folder / "scratch", ignore_errors=True)  # a killed acquisition's descriptor memmaps
            self.check_settings(write=self.write_settings)
            yield finished_records(self.folder)

    def check_settings(self, write: bool = False) -> None:
        """The stored settings.json against the current settings (a finished run looked at without the lock)."""
        check_settings(self.folder, self.settings, write=write, later_defaults=self.later_defaults)

    def restore(self, step: int, key: str | None = None):
        """The checkpoint written when `step` finished (common.loop.save_iteration), or its entry `key`."""
        from common.loop import checkpoint_path  # noqa: PLC0415  (the loop loads torch; readers of results do not)

        return storage.load_checkpoint(checkpoint_path(self.folder, step), key)

    def log_step(self, step: str, record: dict, extra: str = "") -> None:
        """One finished step: "<prefix> <step> labelled=... acc=... minority=... acquire=...s train=...s<extra>"."""
        self.log(f"{self.prefix} {step} labelled={record['labelled']} acc={record['test_acc']:.4f} "
                 f"minority={record['minority_acc']:.4f} acquire={record['acquire_seconds']:.1f}s "
                 f"train={record['train_seconds']:.1f}s{extra}")
