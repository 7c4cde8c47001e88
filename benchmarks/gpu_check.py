"""Five-minute GPU check: does every GPU path run, how fast, and does bfloat16 change FK's picks?

One command on a GPU machine (`--device cuda`); with `--device cpu --tiny` the same sections run on the CPU
at tiny sizes (the test suite does that, so the script cannot rot). Sections, each timed:
  strategies   every strategy family on digits (random, entropy, var-ratio-mc, coreset, badge, vaal, fk-nn,
               fk-cov): a seeded run.py grid, accuracy and acquisition/training seconds per method
  descriptors  benchmarks/descriptors.py (images/s of forward, z, z+g, training)
  matching     the exact PyTorch matcher (common/torch_search.py) on synthetic unit vectors up to the ImageNet
               case (1,281,167 x 768 pool, 64,000 centres, K 32), checked against float32 search (FAISS
               exact where it is quick enough, else the matcher without bfloat16 shortlists)
  grid         random + entropy x 2 runs: the local executor against --executor ray with --gpus-per-task
               0.25 (CPU: plain Ray tasks) and --executor lockstep (their LeNets trained as one), the
               seconds of each and whether their results agree
  bf16         fk-nn with bfloat16 autocast against FKAL_PRECISION=float32: how many of its picks agree
  batched      a grid's LeNets trained as one vmapped model against one by one (benchmarks/batched_training.py)
The report goes to --out (default benchmarks/results/gpu.md).

    python benchmarks/gpu_check.py --device cuda
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gpu.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STRATEGIES = "random,entropy,var-ratio-mc,coreset,badge,vaal,fk-nn,fk-cov"
MATCHING = {  # (pool rows, dimensions, centres)
    "full": [(100_000, 80, 4_000), (500_000, 768, 4_000), (1_281_167, 768, 64_000)],
    "tiny": [(5_000, 80, 125), (20_000, 768, 500)],
}
FAISS_CHECK_WORK = 5e11  # multiply-adds above which float32 is checked with the matcher itself, not FAISS


def run_py(out: Path, device: str, tiny: bool, *flags, env: dict | None = None) -> float:
    """Seconds of one run.py command on digits (raises with its last stderr line when it fails)."""
    size = ["--iterations", "2", "--budget", "20", "--epochs", "2" if tiny else "10", "--vaal-steps", "20" if tiny
            else "100", "--mc-samples", "4" if tiny else "20"]
    command = [sys.executable, "run.py", "--dataset", "digits", "--runs", "1", "--quiet", "--device", device,
               "--out", str(out), *size, *map(str, flags)]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode:
        raise RuntimeError(f"run.py {' '.join(map(str, flags))}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return time.perf_counter() - began


def method_records(out: Path) -> dict[str, list[dict]]:
    records = {}
    for metrics in sorted(out.glob("digits/**/metrics.jsonl")):
        records[f"{metrics.parent.name} {metrics.parents[2].name}"] = [
            json.loads(line) for line in metrics.read_text().splitlines()]
    return records


def strategies(work: Path, device: str, tiny: bool) -> list[str]:
    seconds = run_py(work / "strategies", device, tiny, "--methods", STRATEGIES, "--threads", 1 if tiny else 4)
    lines = [f"{len(STRATEGIES.split(','))} methods x 2 iterations in {seconds:.0f} s (process start included).", "",
             "| method | accuracy after 2 iterations | acquisition s (sum) | training s (sum) |", "|---|---|---|---|"]
    for name, records in method_records(work / "strategies").items():
        lines.append(f"| {name.split()[0]} | {records[-1]['test_acc']:.3f} | "
                     f"{sum(r['acquire_seconds'] for r in records):.2f} | {sum(r['train_seconds'] for r in records):.2f} |")
    return lines


def descriptors(work: Path, device: str, tiny: bool) -> list[str]:
    target = work / "descriptors.md"
    command = [sys.executable, "benchmarks/descriptors.py", "--device", device, "--out", str(target), "--repeats", "1"]
    command += ["--quick", "--models", "LeNet"] if tiny else []
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"descriptors.py: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return [line for line in target.read_text().splitlines() if line.startswith("|")]


def unit_rows(rng: np.random.Generator, rows: int, dims: int) -> np.ndarray:
    block = rng.standard_normal((rows, dims), dtype=np.float32)
    block /= np.linalg.norm(block, axis=1, keepdims=True)
    return block


def matching(device: str, tiny: bool) -> list[str]:
    import torch

    from common.search import exact_top_k
    from common.torch_search import torch_top_k

    lines = ["| pool | dims | centres | seconds (bfloat16 shortlists) | seconds (float32) | centres differing from "
             "float32 search | checked against |", "|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for rows, dims, centres in MATCHING["tiny" if tiny else "full"]:
        pool = unit_rows(rng, rows, dims)
        queries = pool[rng.choice(rows, size=centres, replace=False)] + 0.1 * unit_rows(rng, centres, dims)

        def timed(approximate: bool) -> tuple[float, np.ndarray]:
            if device == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            _scores, ids = torch_top_k(pool, queries, 32, device, approximate=approximate)
            return time.perf_counter() - began, ids

        fast, ids = timed(True)
        plain, plain_ids = timed(False)
        if rows * dims * centres <= FAISS_CHECK_WORK:
            reference, against = exact_top_k(pool, queries, 32)[1], "FAISS exact"
        else:
            reference, against = plain_ids, "float32 matcher"
        differing = int((ids != reference).any(axis=1).sum())
        lines.append(f"| {rows:,} | {dims} | {centres:,} | {fast:.2f} | {plain:.2f} | {differing} | {against} |")
    return lines


def grid(work: Path, device: str, tiny: bool) -> list[str]:
    flags = ["--methods", "random,entropy", "--runs", "2", "--threads", "1"]
    local = run_py(work / "grid-local", device, tiny, *flags)
    shares = ["--gpus-per-task", "0.25"] if device == "cuda" else []
    ray = run_py(work / "grid-ray", device, tiny, *flags, "--executor", "ray", *shares)
    equal = all(
        [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in records]
        == [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in method_records(work / "grid-ray")[key]]
        for key, records in method_records(work / "grid-local").items())
    lockstep = run_py(work / "grid-lockstep", device, tiny, *flags, "--executor", "lockstep")
    picks_equal = all(np.array_equal(np.load(path), np.load(work / "grid-lockstep" / path.relative_to(work / "grid-local")))
                      for path in (work / "grid-local").glob("digits/**/acquired_*.npy"))
    largest = max(abs(a["test_acc"] - b["test_acc"]) for key, records in method_records(work / "grid-local").items()
                  for a, b in zip(records, method_records(work / "grid-lockstep")[key], strict=True))
    how = "--gpus-per-task 0.25 (four runs share the GPU)" if shares else "plain Ray tasks (no GPU: shares not measured)"
    return [f"local executor {local:.0f} s; Ray with {how} {ray:.0f} s (ratio {local / ray:.2f}x); "
            f"results equal: {'yes' if equal else 'NO'}.",
            f"--executor lockstep (the 4 LeNets of an iteration trained as one) {lockstep:.0f} s (ratio "
            f"{local / lockstep:.2f}x); picks equal: {'yes' if picks_equal else 'NO'}, largest test-accuracy "
            f"difference {largest:.4f} (float rounding of batched kernels)."]


def bf16_agreement(work: Path, device: str, tiny: bool) -> list[str]:
    flags = ["--methods", "fk-nn", "--threads", 1 if tiny else 4]
    run_py(work / "bf16", device, tiny, *flags)
    run_py(work / "fp32", device, tiny, *flags, env={"FKAL_PRECISION": "float32"})
    picks = {}
    for name in ("bf16", "fp32"):
        folder = next((work / name).glob("digits/**/fk-nn"))
        picks[name] = [set(np.load(folder / f"acquired_{i:03d}.npy").tolist()) for i in range(2)]
    shared = [len(a & b) / len(a) for a, b in zip(picks["bf16"], picks["fp32"])]
    note = "" if device == "cuda" else " (CPU: autocast is off in both, so they must agree fully)"
    return [f"fk-nn picks shared between bfloat16 autocast and float32: iteration 0 {shared[0]:.0%}, "
            f"iteration 1 {shared[1]:.0%}{note}."]


def batched(_work: Path, device: str, tiny: bool) -> list[str]:
    import torch

    from benchmarks.batched_training import table

    counts, labels, epochs = ([4], [50], 1) if tiny else ([8, 40], [125, 1000], 5)
    return table(torch.device(device), counts, labels, epochs)


SECTIONS = {"strategies": strategies, "descriptors": descriptors, "matching": None, "grid": grid,
            "bf16": bf16_agreement, "batched": batched}


def machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, torch {torch.__version__}"
    return f"CPU only ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the test suite's CPU run)")
    parser.add_argument("--work", type=Path, default=REPO / "local_data" / "gpu-check")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu.md")
    args = parser.parse_args()
    began = time.perf_counter()
    lines = [f"# GPU check: {machine(args.device)}", "",
             f"Generated by `benchmarks/gpu_check.py --device {args.device}{' --tiny' if args.tiny else ''}`.", ""]
    for name, section in SECTIONS.items():
        started = time.perf_counter()
        try:
            body = matching(args.device, args.tiny) if name == "matching" else section(args.work, args.device, args.tiny)
        except Exception as error:  # a broken path is a finding: reported, and the other sections still run
            body = [f"FAILED: {type(error).__name__}: {error}"]
        lines += [f"## {name} ({time.perf_counter() - started:.0f} s)", "", *body, ""]
        print(f"{name}: done in {time.perf_counter() - started:.0f} s", flush=True)
    lines.append(f"Whole check: {time.perf_counter() - began:.0f} s.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if any(line.startswith("FAILED") for line in lines):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
