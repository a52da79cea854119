"""What a data-parallel search adds to one process's (METHOD.md section 3): sharded minibatches,
the global sum of the shards' log-likelihoods, averaged gradients, rank 0 as the only writer.

Every rank holds the same theta, h and random generators, so every rank draws the same global
minibatch B and the same structure and weight noise; only the data differ, rank r evaluating the
likelihood on its shard B_r:

    L = sum_r (|B_r| / |B|) (N / |B_r|) sum_{i in B_r} log p(y_i | x_i, W, Gamma) - c_reg KL(q || p)

(:mod:`bnas_pyro.distributed.collectives`), the same number on every rank and, up to the order
of the floating-point sums, the single-process L on B.  The gradients of theta and h are the
mean of the ranks' gradients (:class:`~bnas_pyro.distributed.GradientAveragingOptimizer`), so
every rank takes the same step and the search ends in the same state as one process on the
same global batches.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from bnas_pyro.distributed import DataParallel, GradientAveragingOptimizer, Shard
from bnas_pyro.inference import MinibatchSampler
from bnas_pyro.random_state import RandomState


class ShardedSampler:
    """The global minibatches of :class:`~bnas_pyro.inference.MinibatchSampler` (same seed,
    same order on every rank), of which each rank returns its own disjoint shard.

    Attributes as the sampler's: ``num_data``, ``batch_size`` (the global batch),
    ``generator``, and ``shard_fraction`` = |B_r| / |B|.
    """

    def __init__(self, x: Tensor, y: Tensor | None, batch_size: int | None,
                 generator: torch.Generator | None, parallel: DataParallel):
        self.x, self.y, self.parallel = x, y, parallel
        self.global_batches = MinibatchSampler(torch.arange(x.shape[0], device=x.device), None,
                                               batch_size, generator)
        self.num_data = self.global_batches.num_data
        self.batch_size = self.global_batches.batch_size
        self.shard_fraction = parallel.shard(torch.arange(self.batch_size)).shape[0] / self.batch_size

    # the state a checkpoint saves (the global order: the same on every rank)
    @property
    def generator(self) -> torch.Generator:
        return self.global_batches.generator

    @property
    def _order(self):
        return self.global_batches._order

    @_order.setter
    def _order(self, value) -> None:
        self.global_batches._order = value

    @property
    def _pos(self) -> int:
        return self.global_batches._pos

    @_pos.setter
    def _pos(self, value: int) -> None:
        self.global_batches._pos = value

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        return self

    def __next__(self) -> tuple[Tensor, Tensor | None]:
        indices, _ = next(self.global_batches)
        mine = self.parallel.shard(indices)
        return self.x[mine], (None if self.y is None else self.y[mine])

    def next_shard(self, summed: bool = True) -> Shard:
        x, y = next(self)
        return Shard(x, y, self.num_data, self.shard_fraction, summed)


def shard_log_likelihood(parallel: DataParallel, log_likelihood: Tensor, shard: Shard) -> Tensor:
    """The global batch's log-likelihood sum_r |B_r|/|B| loglik_r (``shard.summed``), or this
    rank's share R |B_r|/|B| loglik_r of it (whose mean over the ranks is the same)."""
    if shard.summed:
        return parallel.global_sum(log_likelihood * shard.fraction)
    return log_likelihood * (shard.fraction * parallel.world_size)


def sharded_inner_steps(search, num_steps: int) -> float:
    """``search.run_inner_steps`` on R ranks with one all-reduce per step: each rank
    differentiates its share of L (no collective), then the gradients and the share of L are
    averaged together, and every rank takes the same optimiser step.  Returns the last L (the
    global one, the same on every rank)."""
    parallel = search.parallel
    optimizer = search.inner_optimizer
    base = optimizer.base if isinstance(optimizer, GradientAveragingOptimizer) else optimizer
    params = [p for group in base.param_groups for p in group["params"] if p.requires_grad]
    last = None   # read once, after the loop: no copy to the host per step
    for _ in range(num_steps):
        base.zero_grad(set_to_none=True)
        share = search.inner_objective(None, search.sampler.next_shard(summed=False))
        # theta's gradients only: h is fixed in the inner loop
        grads = torch.autograd.grad(-share, params, allow_unused=True)
        averaged = parallel.average(list(grads) + [share.detach().reshape(1)])
        for p, g in zip(params, averaged):
            p.grad = g
        base.step()
        last = averaged[-1]
    return float("nan") if last is None else float(last)


def check_data_parallel(strategy, guide, batch_size: int | None, parallel: DataParallel) -> None:
    """Refuse, by name, what a data-parallel search cannot run as one process would."""
    if not getattr(strategy, "data_parallel", False):
        raise ValueError(
            f"hypergradient {strategy.name!r} differentiates through inner gradients of L inside "
            f"an outer step and does not run data-parallel; with {parallel.world_size} processes "
            "use 'joint' (evidence, enumerate) or 'random', or run it in one process")
    if hasattr(guide, "wrap_optimizer") and not getattr(guide, "data_parallel", False):
        raise ValueError(f"{type(guide).__name__} moves by its own gradient steps on one "
                         "process's data (wrap_optimizer) and does not run data-parallel; run it "
                         "in one process")
    if batch_size is not None and int(batch_size) < parallel.world_size:
        raise ValueError(f"batch_size={batch_size} cannot be split over {parallel.world_size} "
                         f"processes: use batch_size >= {parallel.world_size}")


def averaging(optimizer, parallel: DataParallel | None):
    """``optimizer`` whose steps take the mean gradient over the ranks (as it is in one process)."""
    if parallel is None or isinstance(optimizer, GradientAveragingOptimizer):
        return optimizer
    if hasattr(optimizer, "set_parallel"):   # an optimiser with steps of its own to all-reduce
        optimizer.set_parallel(parallel)
    return GradientAveragingOptimizer(optimizer, parallel)


def synchronise(parallel: DataParallel, modules, device: torch.device) -> None:
    """Rank 0's parameters, buffers and random generators on every rank (once, at the start)."""
    tensors = [t for m in modules for t in m.state_dict(keep_vars=True).values()
               if torch.is_tensor(t)]
    parallel.broadcast([t.data if isinstance(t, torch.nn.Parameter) else t for t in tensors])
    state = parallel.broadcast_object(RandomState.capture(device).to_dict())
    RandomState.from_dict(state).restore()


def run_on_ranks(parallel: DataParallel, jobs: Sequence[Callable[[], Any]]) -> list[Any] | None:
    """Job j on rank j mod R (in turn there); every job's output, in job order, on rank 0
    (``None`` on the others).  A rank waits for the slower ones without a timed collective
    (:meth:`~bnas_pyro.distributed.DataParallel.wait_for_all`), so jobs may take longer than
    the collectives' timeout, and a rank lost meanwhile is named."""
    saved = torch.get_num_threads()
    mine: dict[int, Any] = {}
    with parallel.guard():
        try:
            for j, job in enumerate(jobs):
                if j % parallel.world_size == parallel.rank:
                    mine[j] = job()
        finally:
            torch.set_num_threads(saved)
        parallel.wait_for_all("jobs")
        gathered = parallel.gather_objects(mine)
    if gathered is None:
        return None
    outputs: dict[int, Any] = {}
    for part in gathered:
        outputs.update(part)
    return [outputs[j] for j in range(len(jobs))]


__all__ = ["ShardedSampler", "averaging", "check_data_parallel", "run_on_ranks",
           "shard_log_likelihood", "sharded_inner_steps", "synchronise"]
