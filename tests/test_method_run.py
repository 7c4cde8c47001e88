"""The rules every mode's run folder lives by (common/method_run.py), on hand-made folders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import storage
from common.errors import UserError
from common.method_run import MethodRun, finished_records
from common.naming import run_label, run_prefix

SETTINGS = {"method": "entropy", "budget": 10}


def metrics_line(iteration: int, labelled: int) -> dict:
    """A metrics.jsonl record that follows the results contract (common/records.py)."""
    return {"dataset": "digits", "imbalance": 10.0, "run": 0, "seed": 0, "method": "entropy", "unsupervised": 0,
            "iteration": iteration, "labelled": labelled, "test_acc": 0.5, "balanced_acc": 0.5, "minority_acc": 0.25,
            "class_acc": [0.5] * 10, "acquire_seconds": 1.0, "train_seconds": 2.0}


def method_run(folder: Path, write_settings: bool = True) -> tuple[MethodRun, list[str]]:
    logged: list[str] = []
    return MethodRun(folder=folder, settings=dict(SETTINGS), prefix="[digits ir10 u0 entropy run0]",
                     log=logged.append, write_settings=write_settings, later_defaults={"budget": 10}), logged


def finished(folder: Path, steps: int, settings: dict = SETTINGS) -> list[dict]:
    records = [metrics_line(iteration=i, labelled=10 * (i + 1)) for i in range(steps)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    storage.write_json(folder / "settings.json", settings)
    return records


def test_resume_hands_the_finished_records_to_the_body_after_cleaning_the_folder(tmp_path):
    records = finished(tmp_path / "m", 2)
    stale = tmp_path / "m" / ".metrics.jsonl.abcd1234.tmp"
    stale.write_text("half a line")
    (tmp_path / "m" / "scratch").mkdir()
    (tmp_path / "m" / "scratch" / "z.npy").write_bytes(b"x")
    run, logged = method_run(tmp_path / "m")
    seen = []
    assert run.resume(lambda done: seen.append(done) or ["result"]) == ["result"]
    assert seen == [records] and not stale.exists() and not (tmp_path / "m" / "scratch").exists()
    assert logged == []


def test_a_run_another_process_holds_is_skipped_with_its_finished_records(tmp_path):
    records = finished(tmp_path / "m", 1)
    run, logged = method_run(tmp_path / "m")
    with storage.exclusive(tmp_path / "m") as mine:  # a second open file description: flock conflicts
        assert mine
        assert run.resume(lambda done: pytest.fail("the body ran without the lock")) == records
    assert logged == [f"[digits ir10 u0 entropy run0] {tmp_path / 'm'} is being run by another process; skipped"]


def test_other_settings_are_refused_once_a_step_is_finished_and_rewritten_before(tmp_path):
    finished(tmp_path / "m", 1, {"method": "entropy", "budget": 20})
    run, _ = method_run(tmp_path / "m")
    with pytest.raises(UserError, match=r"was started with other settings \(budget\); use another --out"):
        run.resume(lambda done: done)
    (tmp_path / "m" / "metrics.jsonl").unlink()  # nothing finished: the run restarts with the new settings
    assert run.resume(lambda done: done) == []
    assert json.loads((tmp_path / "m" / "settings.json").read_text()) == SETTINGS


def test_settings_added_later_compare_at_their_defaults_and_a_reader_never_writes(tmp_path):
    finished(tmp_path / "m", 1, {"method": "entropy"})  # written before "budget" existed
    run, _ = method_run(tmp_path / "m", write_settings=False)
    assert len(run.resume(lambda done: done)) == 1
    fresh, _ = method_run(tmp_path / "fresh", write_settings=False)
    fresh.resume(lambda done: done)
    assert not (tmp_path / "fresh" / "settings.json").exists()


def test_steps_out_of_order_are_refused(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(json.dumps(metrics_line(iteration=1, labelled=10)) + "\n")
    with pytest.raises(UserError, match="out of order"):
        finished_records(folder)


def test_one_log_line_format_and_one_naming_for_every_mode():
    logged: list[str] = []
    run = MethodRun(folder=Path("x"), settings={}, prefix=run_prefix("digits", 10.0, "fed-c3", 0, "ksas+kcfu", 2),
                    log=logged.append)
    record = metrics_line(iteration=0, labelled=30)
    run.log_step("cycle=0", record, " missing: query [1]")
    assert logged == ["[digits ir10 fed-c3 u0 ksas+kcfu run2] cycle=0 labelled=30 acc=0.5000 minority=0.2500 "
                      "acquire=1.0s train=2.0s missing: query [1]"]
    assert run_prefix("digits", 10.5, "", 1, "fk-nn", 0) == "[digits ir10.5 u1 fk-nn run0]"
    assert run_label("fk-nn", train_on_validation=True) == "fk-nn+trainval"
    assert run_label("ksas", local_loss="kcfu") == "ksas+kcfu" and run_label("entropy", sync=True) == "entropy+sync"
    assert run_label("random") == "random"
