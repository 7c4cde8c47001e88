"""The GPU extras match their CUDA major version (a CUDA 12 wheel on a CUDA 13 machine fails to load)."""
from __future__ import annotations

import re

from conftest import REPO_ROOT


def packages(name: str) -> list[str]:
    lines = (REPO_ROOT / name).read_text().splitlines()
    return [re.split(r"[<>=!~ ]", line.strip(), maxsplit=1)[0] for line in lines if line.strip() and not line.startswith("#")]


def test_each_gpu_requirements_file_holds_only_builds_of_its_cuda_version():
    cuda12, cuda13 = packages("requirements-gpu-cuda12.txt"), packages("requirements-gpu-cuda13.txt")
    assert cuda12 == ["faiss-gpu-cu12", "nvidia-dali-cuda120"]
    assert cuda13 == ["nvidia-dali-cuda130"]  # no faiss-gpu wheel exists for CUDA 13: matching runs in PyTorch
    assert "faiss-cpu" in packages("requirements.txt")  # kept on CUDA 13 machines (FAISS IVF on the CPU)
