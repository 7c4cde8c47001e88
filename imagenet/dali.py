"""NVIDIA DALI decoding for image folders: JPEG decoding and augmentation on the GPU.

Chosen automatically (imagenet/__init__.py) when DALI is installed and PyTorch sees a GPU; on a
CPU run the same source falls back to the DataLoader path of FolderImages. Install with
requirements-gpu-cuda12.txt or requirements-gpu-cuda13.txt.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from imagenet.folder import FolderImages


def dali_available() -> bool:
    """DALI importable and a CUDA device present."""
    if not torch.cuda.is_available():
        return False
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


class DaliFolderImages(FolderImages):
    """FolderImages whose batches DALI reads, decodes (nvJPEG, "mixed") and crops on the GPU."""

    def stream(self, order: np.ndarray, batch_size: int, augment: bool, device: torch.device) -> Iterator[torch.Tensor]:
        if device.type != "cuda":
            yield from super().stream(order, batch_size, augment, device)
            return
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.plugin.base_iterator import LastBatchPolicy
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        files = [os.fsdecode(path) for path in self.paths[self.positions[order]]]
        crop, resize = self.crop, self.resize
        seed = int(torch.randint(0, 2**31 - 1, (1,)))  # from the caller's seeded torch RNG

        @pipeline_def(batch_size=batch_size, num_threads=max(1, self.workers), seed=seed,
                      device_id=device.index if device.index is not None else torch.cuda.current_device())
        def pipeline():
            encoded, _ = fn.readers.file(files=files, labels=list(range(len(files))), random_shuffle=False,
                                         name="reader")
            images = fn.decoders.image(encoded, device="mixed", output_type=types.RGB)
            if augment:
                images = fn.random_resized_crop(images, size=[crop, crop])
                mirror = fn.random.coin_flip()
            else:
                images = fn.resize(images, resize_shorter=resize)
                mirror = 0
            return fn.crop_mirror_normalize(images, crop=[crop, crop], mirror=mirror, dtype=types.UINT8,
                                            output_layout="CHW")

        batches = DALIGenericIterator([pipeline()], ["images"], reader_name="reader",
                                      last_batch_policy=LastBatchPolicy.PARTIAL)
        for outputs in batches:
            yield outputs[0]["images"]  # uint8 [B, 3, crop, crop] on the GPU, DALI-owned until the next batch
