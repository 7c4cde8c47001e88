"""Descriptor throughput: images/s of FK descriptor generation vs a plain forward pass and vs training.

For LeNet (1x28x28), ResNet-10 (3x32x32) and ResNet-18 (3x224x224) on synthetic uint8 images held
in memory (so decoding is not measured), in one process, best of --repeats:
  forward      eval-mode logits (predict_logits)
  z            feature descriptors (fk-features)
  z+g          features + Fisher scores with the predicted label (fk-pred; fk-nn adds only a lookup)
  train        one SGD epoch with the dataset's batch size
The ratio forward/z+g checks the goal that z+g costs at most 3x a plain forward pass. Timings vary
2-10x on shared machines: read the ratios. Results go to the Markdown file --out.

With --memory-pool N it instead measures peak resident memory of z+g descriptor generation for
a pool of N LeNet images synthesised batch by batch (an ImageSource, like a streamed image
folder), with the descriptor store in memory and on disk, each in a fresh process.

    python benchmarks/descriptors.py [--device auto] [--threads 1] [--quick]
    python benchmarks/descriptors.py --memory-pool 1000000 --threads 1
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import datasets_available  # noqa: E402,F401  (registers every dataset)
from common.datasets import DATASETS  # noqa: E402
from common.gen_descr import DescriptorStore, compute_descriptors, descriptor_layout  # noqa: E402
from common.images import ImageSource  # noqa: E402
from common.train import model_input, place, predict_logits, resolve_device, set_cpu_threads, train_model  # noqa: E402

# (dataset whose model, normalisation and descriptor layers are used, image shape, images on CPU, on GPU)
MODELS = {
    "LeNet": ("fashion-mnist", (1, 28, 28), 8192, 65536),
    "ResNet-10": ("svhn", (3, 32, 32), 1024, 32768),
    "ResNet-18": ("imagenet", (3, 224, 224), 64, 4096),
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    parser.add_argument("--quick", action="store_true", help="a quarter of the images")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "descriptors.md")
    parser.add_argument("--memory-pool", type=int, default=None, help="peak-memory mode: pool size N")
    parser.add_argument("--child-store", default=None, help=argparse.SUPPRESS)
    return parser


class SyntheticImages(ImageSource):
    """`count` random uint8 images made batch by batch (nothing held): a stand-in for a streamed folder."""

    def __init__(self, count: int, shape: tuple[int, ...]) -> None:
        self.count, self.shape = count, shape

    def __len__(self) -> int:
        return self.count

    def take(self, positions: np.ndarray) -> ImageSource:
        return SyntheticImages(len(positions), self.shape)

    def read(self, positions: np.ndarray, augment: bool) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(positions[0]) if len(positions) else 0)
        return torch.randint(0, 256, (len(positions), *self.shape), dtype=torch.uint8, generator=generator)


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmHWM: peak resident; RssAnon: anonymous resident), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class AnonymousPeak:
    """Samples RssAnon every 50 ms: memory the process cannot give back. (VmHWM also counts a
    memmap's file pages, which the kernel may evict at any time, so it overstates a disk store.)"""

    def __init__(self) -> None:
        import threading

        self.peak, self.running = status_mb("RssAnon"), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, status_mb("RssAnon"))
            time.sleep(0.05)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return max(self.peak, status_mb("RssAnon"))


def memory_child(count: int, store_mode: str) -> None:
    """Describe `count` synthetic LeNet images with z+g into a `store_mode` store; print seconds and peak MB."""
    spec = DATASETS.get("fashion-mnist")
    model = spec.model(spec.num_classes, False).eval()
    images = SyntheticImages(count, (1, 28, 28))
    layout = descriptor_layout(model, spec.descriptor_layers[spec.default_layer_set],
                               model_input(spec.normalise, images[:1], torch.device("cpu")))
    with tempfile.TemporaryDirectory() as scratch:
        store = DescriptorStore(store_mode, Path(scratch))
        baseline = status_mb("RssAnon")
        sampler = AnonymousPeak()
        began = time.perf_counter()
        result = compute_descriptors(model, images, spec.normalise, layout, torch.device("cpu"), "pred",
                                     batch_size=spec.inference_batch_size, store=store, keep_logits=False)
        seconds = time.perf_counter() - began
        peak = sampler.stop()
        print(f"{seconds:.1f} {baseline:.0f} {peak:.0f} {status_mb('VmHWM'):.0f} {result.matrix.nbytes / 2**20:.0f}")


def memory_table(args: argparse.Namespace) -> str:
    rows = []
    for mode in ("memory", "disk"):
        command = [sys.executable, __file__, "--memory-pool", str(args.memory_pool), "--child-store", mode]
        if args.threads:
            command += ["--threads", str(args.threads)]
        seconds, baseline, peak, resident, matrix = subprocess.run(
            command, check=True, capture_output=True, text=True).stdout.split()[-5:]
        rows.append(f"| {mode} | {args.memory_pool:,} | {matrix} | {seconds} | {baseline} | {peak} | {resident} |")
        print(rows[-1], flush=True)
    return "\n".join([
        f"Peak memory of z+g descriptor generation, LeNet (L=80, matrix [N, 160] float32), synthetic images "
        f"made per batch ({datetime.date.today()}; {machine(torch.device('cpu'))})",
        "",
        "| store | pool images | descriptor matrix MB | seconds | anonymous MB before | peak anonymous MB "
        "| peak resident MB (incl. page cache of the memmap) |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])


def best_seconds(action, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        action()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return min(times)


def measure(name: str, device: torch.device, repeats: int, quick: bool) -> dict[str, float]:
    dataset, shape, cpu_count, gpu_count = MODELS[name]
    spec = DATASETS.get(dataset)
    count = (gpu_count if device.type == "cuda" else cpu_count) // (4 if quick else 1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, *shape), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, spec.num_classes, (count,), generator=generator)
    model = place(spec.model(spec.num_classes, False), device).eval()
    layers = spec.descriptor_layers[spec.default_layer_set]
    layout = descriptor_layout(model, layers, model_input(spec.normalise, images[:1], device))
    batch = spec.inference_batch_size

    def describe(pseudo_label):
        return lambda: compute_descriptors(model, images, spec.normalise, layout, device, pseudo_label,
                                           batch_size=batch, keep_logits=False)

    rates = {
        "images": count,
        "L": layout.length,
        "forward": count / best_seconds(lambda: predict_logits(model, images, spec.normalise, device, batch),
                                        repeats, device),
        "z": count / best_seconds(describe(None), repeats, device),
        "z+g": count / best_seconds(describe("pred"), repeats, device),
    }
    one_epoch = spec.schedule.with_epochs(1)
    rates["train"] = count / best_seconds(
        lambda: train_model(model, images, labels, one_epoch, spec.normalise, 0, device), repeats, device)
    return rates


def machine(device: torch.device) -> str:
    cpu = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch threads {torch.get_num_threads()}"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    return f"{cpu}; {gpu}; torch {torch.__version__}"


def main() -> None:
    args = get_args_parser().parse_args()
    device = resolve_device(args.device)
    if args.threads:
        set_cpu_threads(args.threads)
    if args.child_store:
        memory_child(args.memory_pool, args.child_store)
        return
    if args.memory_pool:
        table = memory_table(args)
        out = args.out.with_name("descriptor_memory.md")
        out.write_text(table + "\n")
        print(f"\n{table}\nwritten to {out}")
        return
    rows = []
    for name in args.models.split(","):
        rates = measure(name, device, args.repeats, args.quick)
        rows.append(
            f"| {name} | {rates['L']} | {rates['images']} | {rates['forward']:,.0f} | {rates['z']:,.0f} | "
            f"{rates['z+g']:,.0f} | {rates['train']:,.0f} | {rates['forward'] / rates['z+g']:.2f} | "
            f"{rates['train'] / rates['z+g']:.2f} |"
        )
        print(rows[-1], flush=True)
    table = "\n".join([
        f"Descriptor throughput, images/s ({datetime.date.today()}, {device.type}; {machine(device)})",
        "",
        "| model | L | images | forward | z | z+g | train (1 epoch) | forward / z+g | train / z+g |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    print(f"\n{table}\nwritten to {args.out}")


if __name__ == "__main__":
    main()
