"""Files that hold a run's state: atomic JSON-lines results, index arrays, checkpoints.

Every write goes to a temporary file in the same folder and is renamed into place, so a kill
at any moment leaves either the old or the new file, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from common.errors import UserError, describe_os_error


_UMASK = os.umask(0)
os.umask(_UMASK)

# mkstemp names: "." + the target's name + "." + 8 random characters + the suffix of _replacing
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.(tmp|npy|npz|pt)$")
LOW_SPACE_BYTES = 1 << 20  # below this much free space a failed write is reported as a full disk


def _write_failure(path: Path, error: BaseException) -> UserError:
    """A failed write as a one-line UserError naming the path (a full disk is named as such)."""
    if isinstance(error, OSError) and error.strerror:
        cause = error.strerror
    else:
        try:
            full = shutil.disk_usage(path.parent).free < LOW_SPACE_BYTES
        except OSError:
            full = False
        cause = os.strerror(errno.ENOSPC) if full else (str(error).splitlines() or [type(error).__name__])[0]
    return UserError(f"cannot write {path}: {cause}; finished results are unchanged")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files a killed writer left in `folder`; call it only while holding the folder's
    lock (exclusive), so no live writer's file is taken."""
    if not folder.is_dir():
        return []
    stale = [path for path in folder.iterdir() if path.is_file() and _TEMPORARY.match(path.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def _replacing(path: Path, suffix: str) -> Iterator[str]:
    """Yield a temporary path beside `path`; when the block succeeds, rename it over `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as error:
        raise _write_failure(path, error) from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # a full disk, a read-only folder; torch.save raises RuntimeError
        raise _write_failure(path, error) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with _replacing(path, ".tmp") as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_text(path: Path, text: str) -> None:
    """A text file written atomically (a reader sees the old file or the whole new one)."""
    _atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: Path, check: Callable[[Any], str | None] | None = None) -> Any:
    """A JSON file's content; `check(content)` returns what is wrong with it (None when nothing is)."""
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; delete it to start that part again") from None
    problem = check(content) if check is not None else None
    if problem:
        raise UserError(f"{path} is not a valid file of its kind: {problem}; delete it to start that part again")
    return content


def read_jsonl(path: Path, check: Callable[[Any], str | None] | None = None) -> list[dict]:
    """All records of a JSON-lines file ([] when it does not exist); every record must be a JSON object
    and pass `check` (which returns what is wrong with a record, or None)."""
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read results file {path}: {exc}") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"corrupted results file {path} (line {number}); fix or delete it") from None
        problem = "not a JSON object" if not isinstance(record, dict) else (check(record) if check else None)
        if problem:
            raise UserError(f"invalid results file {path} (line {number}: {problem}); fix or delete it")
        records.append(record)
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
    """A 1-D integer array saved by save_indices."""
    if not path.is_file():
        raise UserError(f"index file {path} is missing; delete the run folder to redo it")
    try:
        indices = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"corrupted index file {path}: {exc}; delete the run folder to redo it") from None
    if not isinstance(indices, np.ndarray) or indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise UserError(f"corrupted index file {path}: not a 1-D integer array; delete the run folder to redo it")
    return indices.astype(np.int64, copy=False)


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    with _replacing(path, ".npz") as tmp:
        np.savez(tmp, **arrays)


def load_arrays(path: Path, required: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays of an .npz file; a missing `required` key is corruption too."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as exc:  # OSError, ValueError, EOFError, zipfile.BadZipFile, ...
        raise UserError(f"corrupted file {path} ({type(exc).__name__}); delete it to recreate it") from None
    missing = [key for key in required if key not in arrays]
    if missing:
        raise UserError(f"corrupted file {path} (no {', '.join(missing)}); delete it to recreate it")
    return arrays


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch  # noqa: PLC0415  (only checkpoints need torch: the readers of results load none)

    with _replacing(path, ".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, key: str | None = None) -> Any:
    """A checkpoint written by save_checkpoint, or its entry `key` (a missing key is corruption too)."""
    import torch  # noqa: PLC0415

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
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "w")
    except OSError as error:
        raise UserError(f"cannot work in {folder}: {describe_os_error(error)}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tidy(folder: Path) -> None:
    """Remove a killed writer's temporaries from `folder` if no live process holds its lock (a busy
    folder is left alone: its owner tidies it)."""
    if not folder.is_dir():
        return
    with exclusive(folder) as mine:
        if mine:
            remove_stale_temporaries(folder)


def float32_chunks(vectors: np.ndarray, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, contiguous float32 copy of rows [first, first + chunk)) over `vectors` [N, D]: a descriptor
    matrix streamed from its memmap in bounded pieces (FAISS adds, exact scans, the PyTorch matcher)."""
    for start in range(0, len(vectors), chunk):
        yield start, np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32)
