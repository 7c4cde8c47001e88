"""Seconds and peak memory of the FK matching search (docs/method.md#matching, step 3) on synthetic pools.

For each pool size N, descriptor length L and number of centres Q, the top-K of every centre
is found by (a) exact FAISS on CPU (IndexFlatIP), (b) IVF on CPU (IndexIVFFlat, with its
recall@K against exact), (c) exact FAISS on GPU when faiss has GPUs, (d) the original
method's brute force: chunked torch matmul of centres x pool chunk, torch.topk, top-K merged
across chunks, and (e) FKAL's exact torch matcher (common/torch_search.py) on --device (bfloat16
shortlists re-ranked in float32 on CUDA), checked id for id against (a). Times are reported as
ratios to (a), measured in the same run.

Every measurement runs in a fresh child process (this script with --child), so its peak
resident memory is its own: the child's VmHWM (its ru_maxrss would include the parent's size
at fork). The pool is written once per (N, L) to a scratch .npy file and memory-mapped by the
children, as a disk-backed descriptor store would be; its pages count in a child's resident
memory once read. Descriptors are synthetic: block-normalised (two blocks, z | g) rows around
planted cluster means, generated in float32 chunks, seeded.

Pools whose N*L*4 bytes exceed half of RAM are skipped; a measurement slower than --time-cap
is stopped, and larger ones (or ones whose exact-search work clearly exceeds the cap) skipped.

    python benchmarks/matching.py --quick
    python benchmarks/matching.py --sizes 10000,100000,500000 --dims 80,768 --centres 125,4000 --threads 1
    python benchmarks/matching.py --device cuda --sizes 1281167 --dims 768 --centres 64000   # the ImageNet case
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import search, storage
from common.search import SearchSettings

METHODS = ("exact-cpu", "ivf-cpu", "exact-gpu", "torch-brute", "torch-exact")
GENERATION_CHUNK = 65536


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1280000", help="pool sizes N, comma-separated")
    parser.add_argument("--dims", default="80,768", help="descriptor lengths L, comma-separated")
    parser.add_argument("--centres", default="125,64000", help="numbers of centres Q (queries), comma-separated")
    parser.add_argument("--k", type=int, default=32, help="top-K per centre (recall is recall@K)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per child (FAISS, torch, BLAS)")
    parser.add_argument("--nprobe", type=int, default=SearchSettings.nprobe, help="IVF lists searched per query")
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default: about 4*sqrt(N))")
    parser.add_argument("--train-sample", type=int, default=SearchSettings.train_sample,
                        help="IVF training rows at most")
    parser.add_argument("--clusters", type=int, default=1000, help="planted cluster means in the synthetic data")
    parser.add_argument("--noise", type=float, default=1.0,
                        help="std of the per-dimension noise around a cluster mean (means have std 1)")
    parser.add_argument("--time-cap", type=float, default=600.0,
                        help="seconds one measurement may take; slower ones are stopped and larger ones skipped")
    parser.add_argument("--device", default="cpu", help="where the torch matcher (e) runs: cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", type=Path, default=None,
                        help="where the temporary pool files go (default: the system temp folder)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "matching.md")
    parser.add_argument("--quick", action="store_true",
                        help="a small grid (N 2000,20000; L 80; Q 50,500) to check the script")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one measurement
    return parser


# --- synthetic descriptors ----------------------------------------------------------------------


def block_normalise(rows: np.ndarray) -> np.ndarray:
    """Two blocks (z | g halves): centre each row inside a block and divide by its std, as stage 2 does."""
    parts = []
    for block in np.array_split(rows, 2, axis=1):
        centred = block - block.mean(axis=1, keepdims=True)
        parts.append(centred / (np.sqrt((centred**2).mean(axis=1, keepdims=True)) + 1e-10))
    return np.concatenate(parts, axis=1).astype(np.float32)


def write_descriptors(
    path: Path, rows: int, length: int, clusters: int, noise: float, seed: int, stream: int
) -> None:
    """`rows` block-normalised descriptors around `clusters` shared means, written in float32 chunks."""
    means = np.random.default_rng([seed, length, 0]).standard_normal((clusters, length), dtype=np.float32)
    rng = np.random.default_rng([seed, length, rows, stream])
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, length))
    for start in range(0, rows, GENERATION_CHUNK):
        count = min(GENERATION_CHUNK, rows - start)
        labels = rng.integers(clusters, size=count)
        deviations = noise * rng.standard_normal((count, length), dtype=np.float32)
        out[start : start + count] = block_normalise(means[labels] + deviations)
    out.flush()
    del out


# --- one measurement, in a child process ---------------------------------------------------------


def torch_brute_force(pool: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The original method: centres x pool-chunk similarities, torch.topk, running top-K merge."""
    import torch

    centres = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))  # [Q, L]
    chunk_rows = int(np.clip(2**26 // max(len(centres), 1), 1024, 65536))  # [Q, chunk] <= 256 MB
    best_similarities = torch.empty((len(centres), 0))
    best_ids = torch.empty((len(centres), 0), dtype=torch.int64)
    for start, chunk in storage.float32_chunks(pool, chunk_rows):
        similarities = centres @ torch.from_numpy(chunk).T  # [Q, chunk]
        top = torch.topk(similarities, min(k, similarities.shape[1]), dim=1)
        merged_similarities = torch.cat([best_similarities, top.values], dim=1)
        merged_ids = torch.cat([best_ids, top.indices + start], dim=1)
        best = torch.topk(merged_similarities, min(k, merged_similarities.shape[1]), dim=1)
        best_similarities, best_ids = best.values, torch.gather(merged_ids, 1, best.indices)
    return best_similarities.numpy(), best_ids.numpy()


def resident_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS (now) of this process in MB. ru_maxrss is not used for the peak:
    Linux carries the parent's resident size at fork into a child's ru_maxrss across exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB (macOS: bytes)


def measure(spec: dict) -> dict:
    """Run one method on one (pool, queries) pair; times, peak memory, the top-K ids on disk."""
    import faiss

    faiss.omp_set_num_threads(spec["threads"])
    if spec["method"].startswith("torch"):
        import torch

        torch.set_num_threads(spec["threads"])
    pool = np.load(spec["pool"], mmap_mode="r")  # [N, L]
    queries = np.load(spec["queries"])  # [Q, L]
    base_mb = resident_mb("VmRSS")
    result: dict = {}
    began = time.perf_counter()
    if spec["method"] == "torch-brute":
        _, ids = torch_brute_force(pool, queries, spec["k"])
    elif spec["method"] == "torch-exact":
        from common.torch_search import torch_top_k

        _, ids = torch_top_k(pool, queries, spec["k"], spec["device"])  # returns on the host: synchronised
    else:
        settings = SearchSettings(index="ivf" if spec["method"] == "ivf-cpu" else "exact", nlist=spec["nlist"],
                                  nprobe=spec["nprobe"], train_sample=spec["train_sample"])
        index = search.build_index(pool, settings, rng_seed=spec["seed"], gpu=spec["method"] == "exact-gpu")
        result["build_seconds"] = time.perf_counter() - began
        if spec["method"] == "ivf-cpu":
            result["nlist"], result["nprobe"] = index.nlist, index.nprobe
        _, ids = search.search(index, queries, spec["k"])
    result["seconds"] = time.perf_counter() - began
    result["peak_mb"] = resident_mb("VmHWM")
    result["base_mb"] = base_mb
    np.save(spec["ids"], ids)
    return result


@dataclass
class Outcome:
    """One cell of the grid: a measurement's result, or why there is none."""

    result: dict | None
    note: str = ""


def run_child(spec: dict, time_cap: float) -> Outcome:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]),
               OPENBLAS_NUM_THREADS=str(spec["threads"]))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=time_cap, env=env, cwd=REPO,
                              check=False)
    except subprocess.TimeoutExpired:
        return Outcome(None, f"stopped at the {time_cap:g} s cap")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Outcome(None, f"failed: {last[:80]}")
    return Outcome(json.loads(done.stdout.strip().splitlines()[-1]))


# --- the grid ---------------------------------------------------------------------------------------


def machine_line() -> str:
    import faiss

    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    gpu = f"{gpus} GPU(s) visible to faiss" if gpus else "no GPU (faiss-cpu)"
    return f"{os.cpu_count()} logical CPUs ({cpu}), {ram_gb:.0f} GiB RAM, {gpu}, faiss {faiss.__version__}"


def cell(outcome: Outcome | None, reference: float | None) -> str:
    """`seconds (ratio x exact) / peak MB`, or the reason for no measurement."""
    if outcome is None:
        return "-"
    if outcome.result is None:
        return outcome.note
    seconds, peak = outcome.result["seconds"], outcome.result["peak_mb"]
    ratio = f" ({seconds / reference:.2f}x)" if reference else ""
    return f"{seconds:.2f} s{ratio} / {peak:.0f} MB"


@dataclass
class Grid:
    """What earlier measurements teach the later ones: where the time cap was hit, and how fast
    the exact methods ran (to skip a run whose N*L*Q multiply-adds would clearly pass the cap)."""

    args: argparse.Namespace
    scratch: Path
    has_gpu: bool
    stopped: dict = field(default_factory=lambda: {method: [] for method in METHODS})  # [(N, L, Q)]
    rates: dict = field(default_factory=dict)  # method -> multiply-adds per second, fastest so far
    base_mb: dict = field(default_factory=dict)  # method -> resident MB of a child before its work

    def why_not(self, method: str, size: int, length: int, count: int) -> str:
        """Why (method, N, L, Q) is not measured, or "" when it is."""
        if method == "exact-gpu" and not self.has_gpu:
            return "no GPU"
        if any(size >= n and length >= d and count >= q for n, d, q in self.stopped[method]):
            return "skipped: a smaller run hit the cap"
        estimate = size * length * count / self.rates[method] if method in self.rates else 0.0
        if estimate > self.args.time_cap:
            return f"skipped: about {estimate:.0f} s > cap"
        return ""

    def row(self, size: int, length: int, count: int, pool_path: Path, query_path: Path) -> dict[str, Outcome]:
        """Every method on one (pool, centres) pair, each in its own child; IVF recall against exact."""
        args, outcomes = self.args, {}
        for method in METHODS:
            reason = self.why_not(method, size, length, count)
            if reason:
                outcomes[method] = Outcome(None, reason)
                continue
            spec = {"method": method, "pool": str(pool_path), "queries": str(query_path), "k": args.k,
                    "threads": args.threads, "nlist": args.nlist, "nprobe": args.nprobe,
                    "train_sample": args.train_sample, "seed": args.seed, "device": args.device,
                    "ids": str(self.scratch / f"ids-{method}.npy")}
            outcomes[method] = run_child(spec, args.time_cap)
            result = outcomes[method].result
            if result is None:
                self.stopped[method].append((size, length, count))
                continue
            result["ids"] = np.load(spec["ids"])
            self.base_mb[method] = result["base_mb"]
            if method in ("exact-cpu", "torch-brute", "torch-exact"):
                rate = size * length * count / result["seconds"]
                self.rates[method] = max(self.rates.get(method, 0.0), rate)
        exact = next((outcomes[m].result for m in ("exact-cpu", "torch-brute", "exact-gpu")
                      if outcomes[m].result is not None), None)
        ivf = outcomes["ivf-cpu"].result
        if ivf is not None and exact is not None:
            ivf["recall"] = search.recall_at_k(exact["ids"], ivf["ids"])
        ours, faiss_exact = outcomes["torch-exact"].result, outcomes["exact-cpu"].result
        if ours is not None and faiss_exact is not None:
            ours["differing"] = int((ours["ids"] != faiss_exact["ids"]).any(axis=1).sum())
        return outcomes


def main(args: argparse.Namespace) -> None:
    import faiss

    if args.quick:
        sizes, dims, centres = [2000, 20000], [80], [50, 500]
    else:
        sizes, dims, centres = (sorted(int(value) for value in text.split(","))
                                for text in (args.sizes, args.dims, args.centres))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    machine = machine_line()
    print(f"{machine}; {args.threads} thread(s) per measurement", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-matching-", dir=args.scratch) as scratch:
        grid = Grid(args, Path(scratch), has_gpu=getattr(faiss, "get_num_gpus", lambda: 0)() > 0)
        rows, began = [], time.perf_counter()
        for length, size in itertools.product(dims, sizes):
            pool_bytes = size * length * 4
            if pool_bytes > ram / 2:
                note = f"skipped: pool {pool_bytes / 2**30:.1f} GiB > half of RAM"
                rows.extend((size, length, count, {}, note) for count in centres)
                continue
            pool_path = grid.scratch / f"pool-{size}-{length}.npy"
            write_descriptors(pool_path, size, length, args.clusters, args.noise, args.seed, stream=1)
            for count in centres:
                query_path = grid.scratch / f"queries-{count}-{length}.npy"
                write_descriptors(query_path, count, length, args.clusters, args.noise, args.seed, stream=2)
                rows.append((size, length, count, grid.row(size, length, count, pool_path, query_path), ""))
                print(format_row(rows[-1]), flush=True)
            pool_path.unlink()
    report = render(rows, args, machine, grid.base_mb, time.perf_counter() - began)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"written to {args.out}")


HEADER = ("| N | L | Q | exact FAISS CPU | IVF CPU | IVF nlist / nprobe | IVF recall@{k} | exact FAISS GPU "
          "| torch brute force | torch exact ({device}) | centres whose ids differ from FAISS exact |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def format_row(row: tuple) -> str:
    size, length, count, outcomes, note = row
    if note:
        return f"| {size} | {length} | {count} | {note} | - | - | - | - | - | - | - |"
    exact = outcomes["exact-cpu"].result
    reference = exact["seconds"] if exact else None
    ivf = outcomes["ivf-cpu"].result
    lists = f"{ivf['nlist']} / {ivf['nprobe']}" if ivf else "-"
    recall = f"{ivf['recall']:.4f}" if ivf and "recall" in ivf else "-"
    gpu = outcomes["exact-gpu"]
    ours = outcomes["torch-exact"].result
    return (f"| {size} | {length} | {count} | {cell(outcomes['exact-cpu'], None)} "
            f"| {cell(outcomes['ivf-cpu'], reference)} | {lists} | {recall} | {cell(gpu, reference)} "
            f"| {cell(outcomes['torch-brute'], reference)} | {cell(outcomes['torch-exact'], reference)} "
            f"| {ours['differing'] if ours and 'differing' in ours else '-'} |")


def render(rows: list[tuple], args: argparse.Namespace, machine: str, base_mb: dict, seconds: float) -> str:
    bases = ", ".join(f"{method} {mb:.0f} MB" for method, mb in base_mb.items())
    lines = [
        "# Matching search: exact FAISS, IVF, GPU, the original torch brute force and FKAL's exact torch matcher",
        "",
        (f"Measured {datetime.date.today().isoformat()} on {machine}; {args.threads} CPU thread(s) per "
         f"measurement; top-K = {args.k}; IVF nprobe {args.nprobe}, nlist "
         f"{args.nlist or 'about 4*sqrt(N), at most train_sample/39'}, training sample {args.train_sample}; "
         f"{args.clusters} planted clusters, noise {args.noise:g}; seed {args.seed}; "
         f"whole grid {seconds / 60:.1f} min."),
        "",
        ("Each cell: seconds (index build + search, or the whole brute force) (ratio to exact FAISS CPU) / "
         "peak resident memory of a fresh child process. The pool (N x L float32) is memory-mapped from disk "
         f"and counts in the peak once read; a child's own baseline before its work: {bases or '-'}. "
         f"Recall@{args.k} of IVF is over every centre, against the exact top-K."),
        "",
        "Command: `python benchmarks/matching.py " + " ".join(sys.argv[1:]) + "`",
        "",
        HEADER.format(k=args.k, device=args.device),
        *(format_row(row) for row in rows),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    if arguments.child is not None:
        print(json.dumps(measure(json.loads(arguments.child))))
    else:
        main(arguments)
