"""Seconds per acquisition of every method on one pool, side by side in one process.

Default: Fashion-MNIST at imbalance 100 (about 25k pool + 10k validation images), LeNet
trained on 500 random labels, budget 125. Timings on a shared machine vary 2-10x between
runs: read the ratios to fk-nn, which are measured together.

    python benchmarks/acquisition_speed.py [--threads 2] [--repeats 3] [--methods ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import datasets_available  # noqa: E402,F401  (registers every dataset)
from common.datasets import DATASETS  # noqa: E402
from common.experiment import DatasetArrays, Protocol, prepare_run  # noqa: E402
from common.seeding import numpy_rng  # noqa: E402
from common.splits import default_minority_classes  # noqa: E402
from common.strategies import STRATEGIES, AcquisitionOptions, AcquisitionState  # noqa: E402
from common.train import set_cpu_threads, train_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--imbalance", type=float, default=100)
    parser.add_argument("--methods", default=",".join(STRATEGIES.names()))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timings per method; the median is reported")
    parser.add_argument("--out", type=Path, default=REPO / "local_data" / "bench-speed")
    args = parser.parse_args()
    set_cpu_threads(args.threads)
    device = torch.device("cpu")
    spec = DATASETS.get(args.dataset)
    data = DatasetArrays(train=spec.load(None, True), test=spec.load(None, False))
    protocol = Protocol(spec.name, args.imbalance, spec.val_per_class, default_minority_classes(spec.num_classes), 0)
    ctx = prepare_run(spec, data, protocol, 0, args.out, device)
    labelled = numpy_rng(0, "speed").choice(len(ctx.pool), size=500, replace=False)
    index = torch.from_numpy(labelled)
    unlabelled = np.setdiff1d(np.arange(len(ctx.pool)), labelled)
    print(f"{spec.name} ir{args.imbalance:g}: pool {len(ctx.pool)}, validation {len(ctx.validation)}, "
          f"unlabelled {len(unlabelled)}, budget {spec.budget}, {args.threads} threads")
    timings = {}
    for name in args.methods.split(","):
        strategy = STRATEGIES.get(name)
        model = spec.model(spec.num_classes, strategy.mc_dropout)
        train_model(model, ctx.pool.images[index], ctx.pool.labels[index], spec.schedule.with_epochs(10),
                    spec.normalise, 0, device)
        options = AcquisitionOptions(device=device, descriptor_layers=spec.descriptor_layers[spec.default_layer_set],
                                     top_k=spec.top_k, batch_size=spec.inference_batch_size)
        seconds = []
        for repeat in range(args.repeats):
            state = AcquisitionState(
                models=[model], to_input=spec.normalise, pool=ctx.pool, unlabelled=unlabelled,
                validation=ctx.validation, iteration=1, budget=spec.budget, rng=numpy_rng(0, "speed", repeat),
                seed=repeat, options=options,
            )
            began = time.perf_counter()
            strategy.select(state)
            seconds.append(time.perf_counter() - began)
        timings[name] = float(np.median(seconds))
    reference = timings.get("fk-nn")
    print("| method | seconds per acquisition | ratio to fk-nn |\n|---|---|---|")
    for name, value in timings.items():
        ratio = f"{value / reference:.2f}" if reference else "-"
        print(f"| {name} | {value:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
