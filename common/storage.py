"""Files that hold a run's state: atomic JSON-lines results, index arrays, checkpoints.

Every write goes to a temporary file in the same folder and is renamed into place, so a kill
at any moment leaves either the old or the new file, never half of one.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from common.errors import UserError


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def _replacing(path: Path, suffix: str) -> Iterator[str]:
    """Yield a temporary path beside `path`; when the block succeeds, rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with _replacing(path, ".tmp") as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; delete it to start that part again") from None


def read_jsonl(path: Path) -> list[dict]:
    """All records of a JSON-lines file ([] when it does not exist)."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise UserError(f"corrupted results file {path} (line {number}); fix or delete it") from None
    return records


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line atomically (the whole file is rewritten and renamed)."""
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    _atomic_write_bytes(path, old + (json.dumps(record, sort_keys=True) + "\n").encode())


def save_indices(path: Path, indices: np.ndarray) -> None:
    with _replacing(path, ".npy") as tmp:
        np.save(tmp, np.asarray(indices, dtype=np.int64))


def load_indices(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"corrupted index file {path}: {exc}; delete the run folder to redo it") from None


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    with _replacing(path, ".npz") as tmp:
        np.savez(tmp, **arrays)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as exc:  # OSError, ValueError, EOFError, zipfile.BadZipFile, ...
        raise UserError(f"corrupted file {path} ({type(exc).__name__}); delete it to recreate it") from None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with _replacing(path, ".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, key: str | None = None) -> Any:
    """A checkpoint written by save_checkpoint, or its entry `key` (a missing key is corruption too)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} is missing; delete its run folder to redo the run") from None
    except Exception as exc:  # torch raises many types for a damaged file
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"corrupted checkpoint {path} ({first_line}); delete it to recreate it") from None
    if key is None:
        return checkpoint
    if not isinstance(checkpoint, dict) or key not in checkpoint:
        raise UserError(f"corrupted checkpoint {path} (no {key!r} entry); delete it to recreate it")
    return checkpoint[key]


@contextlib.contextmanager
def exclusive(folder: Path, wait: bool = False) -> Iterator[bool]:
    """Hold an advisory lock on `folder`; yields False if another process holds it (or waits
    for it with `wait`).

    Lets several workers share one results tree: each run folder is worked on by one of them.
    The lock dies with its process, so a killed run never leaves a stale lock behind.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
