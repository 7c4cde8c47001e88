"""Descriptor throughput: images/s of FK descriptor generation vs a plain forward pass and vs training.

For LeNet (1x28x28), ResNet-10 (3x32x32) and ResNet-18 (3x224x224) on synthetic uint8 images held
in memory (so decoding is not measured), in one process, best of --repeats:
  forward      eval-mode logits (predict_logits)
  z            feature descriptors (fk-features)
  z+g          features + Fisher scores with the predicted label (fk-pred; fk-nn adds only a lookup)
  train        one SGD epoch with the dataset's batch size
The ratio forward/z+g is the issue's "within 3x of a plain forward pass" check. Timings vary
2-10x on shared machines: read the ratios. Results go to the Markdown file --out.

    python benchmarks/descriptors.py [--device auto] [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import datasets_available  # noqa: E402,F401  (registers every dataset)
from common.datasets import DATASETS  # noqa: E402
from common.gen_descr import compute_descriptors, descriptor_layout  # noqa: E402
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
    return parser


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
