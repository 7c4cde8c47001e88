"""Run-state files (common/storage.py): atomic JSON lines, index arrays, checkpoints."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from common import storage
from common.errors import UserError


def test_append_jsonl_keeps_earlier_lines(tmp_path):
    path = tmp_path / "sub" / "metrics.jsonl"
    for i in range(3):
        storage.append_jsonl(path, {"iteration": i, "acc": i / 10})
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"acc": i / 10, "iteration": i} for i in range(3)]
    assert storage.read_jsonl(path) == [{"acc": i / 10, "iteration": i} for i in range(3)]


def test_append_jsonl_after_line_without_newline(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 0}')
    storage.append_jsonl(path, {"iteration": 1})
    assert storage.read_jsonl(path) == [{"iteration": 0}, {"iteration": 1}]


def test_append_jsonl_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    storage.append_jsonl(path, {"iteration": 0})
    before = path.read_bytes()

    def broken_replace(*_args, **_kwargs):
        raise KeyboardInterrupt  # a kill between writing the temporary file and renaming it

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        storage.append_jsonl(path, {"iteration": 1})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_read_jsonl_missing_file_is_empty(tmp_path):
    assert storage.read_jsonl(tmp_path / "none.jsonl") == []


def test_read_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert storage.read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_read_jsonl_corrupted_line_is_user_error(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b\n{"a": 3}\n')
    with pytest.raises(UserError, match="line 2"):
        storage.read_jsonl(path)


def test_json_round_trip_and_corruption(tmp_path):
    path = tmp_path / "settings.json"
    storage.write_json(path, {"b": [1, 2], "a": "x"})
    assert storage.read_json(path) == {"a": "x", "b": [1, 2]}
    path.write_text("{not json")
    with pytest.raises(UserError):
        storage.read_json(path)


def test_indices_round_trip_and_corruption(tmp_path):
    path = tmp_path / "acquired_000.npy"
    storage.save_indices(path, np.array([5, 3, 9], dtype=np.int32))
    loaded = storage.load_indices(path)
    np.testing.assert_array_equal(loaded, [5, 3, 9])
    assert loaded.dtype == np.int64
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(UserError):
        storage.load_indices(path)
    path.write_bytes(b"garbage garbage garbage")
    with pytest.raises(UserError):
        storage.load_indices(path)


def test_arrays_round_trip(tmp_path):
    path = tmp_path / "split.npz"
    storage.save_arrays(path, val_indices=np.arange(3), pool_indices=np.arange(3, 10))
    loaded = storage.load_arrays(path)
    np.testing.assert_array_equal(loaded["val_indices"], np.arange(3))
    np.testing.assert_array_equal(loaded["pool_indices"], np.arange(3, 10))


def test_load_arrays_garbage_is_user_error(tmp_path):
    path = tmp_path / "split.npz"
    path.write_bytes(b"this is not an npz file at all")
    with pytest.raises(UserError):
        storage.load_arrays(path)


def test_load_arrays_truncated_npz_is_user_error(tmp_path):
    """A split.npz cut short (a disk-full or copied-while-writing file) is a corrupted file too."""
    path = tmp_path / "split.npz"
    storage.save_arrays(path, val_indices=np.arange(30), pool_indices=np.arange(30, 100))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError):
        storage.load_arrays(path)


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "model_000.pt"
    state = {"states": [{"w": torch.arange(4.0)}]}
    storage.save_checkpoint(path, state)
    loaded = storage.load_checkpoint(path)
    assert torch.equal(loaded["states"][0]["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["model_000.pt"]


@pytest.mark.parametrize("content", [b"garbage", b"", b"PK\x03\x04 truncated zip"])
def test_load_checkpoint_garbage_is_user_error(tmp_path, content):
    path = tmp_path / "model_000.pt"
    path.write_bytes(content)
    with pytest.raises(UserError):
        storage.load_checkpoint(path)


def test_load_checkpoint_truncated_is_user_error(tmp_path):
    path = tmp_path / "model_000.pt"
    storage.save_checkpoint(path, {"state": {"w": torch.zeros(1000)}})
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError):
        storage.load_checkpoint(path)


def test_load_checkpoint_missing_is_user_error(tmp_path):
    with pytest.raises(UserError):
        storage.load_checkpoint(tmp_path / "nothing.pt")
