"""Per-run randomness: every draw comes from the run's seed and a named stream.

Streams are derived, not consumed in order, so iteration b of a resumed run sees exactly the
random numbers it would have seen without the interruption.
"""
from __future__ import annotations

import contextlib
import zlib
from typing import Iterator

import numpy as np
import torch


def _stream_key(stream: tuple) -> list[int]:
    return [zlib.crc32(str(part).encode()) for part in stream]


def numpy_rng(seed: int, *stream: object) -> np.random.Generator:
    """A numpy generator for `seed` and a stream name such as ("acquire", 3)."""
    return np.random.default_rng([seed, *_stream_key(stream)])


def torch_seed(seed: int, *stream: object) -> int:
    """A 63-bit integer seed for torch generators, derived like `numpy_rng`."""
    return int(np.random.SeedSequence([seed, *_stream_key(stream)]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def torch_global_seed(seed: int) -> Iterator[None]:
    """Seed torch's global generator (dropout, weight init) inside a block, restoring it after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
