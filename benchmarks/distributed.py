"""Inner-loop samples per second of a data-parallel search: 1 process against 2 (1 thread each).

The inner loop is ``BilevelSearch.run_inner_steps`` (SVI steps on theta at fixed h, the
operator T^eta of METHOD.md section 5) of a mean-field supernet 784 -> 256 -> 256 -> 10 whose
hidden edges choose between relu and tanh (about 0.53 M weights), on Fashion-MNIST's 60,000
training images when the IDX files are present (``--data``, default
``/usr/share/datasets/fashion-mnist``), else on a synthetic set of 60,000 rows of 784 features.
For each global batch size it times ``--steps`` steps after ``--warmup`` steps with

- ``1 process``: the search as it runs in one process;
- ``2 processes``: the same search with ``parallel=`` (gloo): each rank's shard of the global
  batch, a global sum of the log-likelihood and one flat all-reduce of the averaged gradients
  after the backward pass (``bnas_pyro.distributed``: what the search uses);
- ``2 (DDP)``: the same steps written for ``torch.nn.parallel.DistributedDataParallel``, whose
  bucketed all-reduce overlaps the backward pass (each rank's loss is its share
  R * (|B_r| / |B|) * loglik_r - KL, so that DDP's mean of the gradients is the global one).

It prints samples per second and the speed-up over one process of each (targets: >= 1.6 at 8192
and >= 1.3 at 2048).  Both processes share the machine's cores with the communication, so run it
on an otherwise idle machine.

    python benchmarks/distributed.py                       # 512, 2048, 8192
    python benchmarks/distributed.py --batches 512 --steps 2 --warmup 1   # a smoke run
"""

from __future__ import annotations

import argparse
import gzip
import os
import socket
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

DEFAULT_DATA = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain): big-endian magic (0, 0, dtype code, ndim), dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_data(folder: Path | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    images = None if folder is None else folder / "train-images-idx3-ubyte.gz"
    labels = None if folder is None else folder / "train-labels-idx1-ubyte.gz"
    if images is not None and images.exists() and labels.exists():
        x = torch.from_numpy(read_idx(images).reshape(-1, 784).astype(np.float32) / 255.0)
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        y = torch.from_numpy(read_idx(labels).astype(np.int64))
        return x, y, f"Fashion-MNIST ({folder})"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60000, 784, generator=g)
    w = torch.randn(784, 10, generator=g) / 28.0
    y = (x @ w + 0.5 * torch.randn(60000, 10, generator=g)).argmax(-1)
    return x, y, "synthetic 60000 x 784 (Fashion-MNIST not found)"


def build_search(batch_size: int, parallel):
    from bnas_pyro import BilevelSearch, Coefficients, SearchSpace
    from bnas_pyro.guides import MeanFieldGuide
    from bnas_pyro.models import BayesianSupernet

    space = SearchSpace({"x": 784, "h1": 256, "h2": 256, "y": 10},
                        [("x", "h1", ["relu", "tanh"]), ("h1", "h2", ["relu", "tanh"]),
                         ("h2", "y", ["linear"])])
    torch.manual_seed(0)
    model = BayesianSupernet(space)
    guide = MeanFieldGuide(model, init_scale=1e-3, generator=torch.Generator().manual_seed(0))
    search = BilevelSearch(model, guide, Coefficients(), "joint", inner_steps=1, outer_steps=1,
                           lr=1e-3, batch_size=batch_size, seed=0, progress=False,
                           parallel=parallel)
    for p in model.hyper.parameters():   # the inner loop moves theta only, in every variant
        p.requires_grad_(False)
    return search


class ShareLoss(torch.nn.Module):
    """Rank r's share of -L for DDP: -(R |B_r|/|B| loglik_r - KL); DDP averages the gradients."""

    def __init__(self, search, world_size: int):
        super().__init__()
        self.guide = search.guide
        object.__setattr__(self, "model", search.model)
        self.world_size = world_size

    def forward(self, x, y, num_data, fraction):
        from bnas_pyro.objectives import trace_terms

        t = trace_terms(self.model, self.guide, x, y, num_data)
        return -(self.world_size * fraction * t.log_likelihood - t.kl)


def worker(rank: int, world_size: int, port: int, variant: str, batches: list[int], steps: int,
           warmup: int, data: str | None, out) -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*not registered in the param store")
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from bnas_pyro.distributed import init_from_environment

    parallel = init_from_environment(timeout=1800)
    x, y, name = load_data(None if data is None else Path(data))
    results = {}
    for batch in batches:
        search = build_search(batch, parallel if variant == "ours" else None)
        if variant == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            from bnas_pyro.optimisers import adam
            from bnas_pyro.search.data_parallel import ShardedSampler

            search.prepare(x, y)
            sampler = ShardedSampler(x, y, batch, torch.Generator().manual_seed(0), parallel)
            ddp = DistributedDataParallel(ShareLoss(search, world_size))
            optimizer = adam(search.guide.parameters(), lr=1e-3)

            def run(n):
                for _ in range(n):
                    xb, yb, num, frac = *next(sampler), x.shape[0], sampler.shard_fraction
                    optimizer.zero_grad(set_to_none=True)
                    ddp(xb, yb, num, frac).backward()
                    optimizer.step()
        else:
            search.prepare(x, y)

            def run(n):
                search.run_inner_steps(n)
        run(warmup)
        if parallel is not None:
            parallel.barrier()
        start = time.perf_counter()
        run(steps)
        if parallel is not None:
            parallel.barrier()
        results[batch] = batch * steps / (time.perf_counter() - start)
    if rank == 0:
        out.put((name, results))
    if parallel is not None:
        parallel.close()


def measure(variant: str, world_size: int, batches, steps, warmup, data) -> tuple[str, dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(worker, args=(world_size, port, variant, batches, steps, warmup, data, queue),
                       nprocs=world_size, join=True, start_method="spawn")
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="folder with Fashion-MNIST's IDX files (synthetic data if absent)")
    parser.add_argument("--no-ddp", action="store_true", help="skip the DDP variant")
    args = parser.parse_args()
    name, one = measure("ours", 1, args.batches, args.steps, args.warmup, args.data)
    _, two = measure("ours", 2, args.batches, args.steps, args.warmup, args.data)
    ddp = None if args.no_ddp else measure("ddp", 2, args.batches, args.steps, args.warmup,
                                           args.data)[1]
    print(f"data: {name}; {args.steps} timed steps after {args.warmup}; 1 thread per process")
    header = f"{'global batch':>12} {'1 process':>12} {'2 processes':>12} {'speed-up':>9}"
    if ddp is not None:
        header += f" {'2 (DDP)':>12} {'speed-up':>9}"
    print(header + "   (samples / second)")
    targets = {8192: 1.6, 2048: 1.3}
    for b in args.batches:
        line = f"{b:>12} {one[b]:>12.0f} {two[b]:>12.0f} {two[b] / one[b]:>9.2f}"
        if ddp is not None:
            line += f" {ddp[b]:>12.0f} {ddp[b] / one[b]:>9.2f}"
        if b in targets:
            line += f"   target >= {targets[b]}"
        print(line)


if __name__ == "__main__":
    main()
