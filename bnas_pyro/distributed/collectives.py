"""The collectives of data-parallel SVI, on ``torch.distributed`` (METHOD.md section 3).

With the data split over R ranks, rank r holds the shard B_r of a global minibatch B and the
same theta, h and noise as every other rank.  The scaled log-likelihood of the global batch is

    loglik(B) = (N / |B|) sum_{i in B} log p(y_i | x_i, W, Gamma)
              = sum_r (|B_r| / |B|) * [(N / |B_r|) sum_{i in B_r} log p(y_i | x_i, W, Gamma)],

so each rank scales its shard's plate-scaled term by |B_r| / |B| and :func:`global_sum` adds the
R terms.  Its backward pass all-reduces the incoming gradient as well, so that for any objective
F built from global sums and replicated terms (the KLs, log p(h), computed alike on every rank)

    dF/dtheta = (1 / R) sum_r g_r,

where g_r is the gradient rank r's autograd returns.  :func:`average_gradients` takes that mean,
in one flat bucket (one all-reduce per parameter set, as DDP's buckets do).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor


class _GlobalSum(torch.autograd.Function):
    """sum_r x_r on every rank; the backward pass sums the ranks' gradients the same way."""

    @staticmethod
    def forward(ctx, tensor: Tensor, group) -> Tensor:  # type: ignore[override]
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        return _GlobalSum.apply(grad_output, ctx.group), None


def global_sum(tensor: Tensor, group=None) -> Tensor:
    """sum_r tensor_r over the ranks of ``group``, differentiable (any order of derivative)."""
    return _GlobalSum.apply(tensor, group)


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _unflat(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for t in like:
        out.append(flat[start:start + t.numel()].view_as(t).to(t.dtype))
        start += t.numel()
    return out


def average_tensors(tensors: Sequence[Tensor | None], world_size: int, group=None) -> list[Tensor | None]:
    """(1 / R) sum_r t_r for each tensor, by one all-reduce per dtype of one flat buffer;
    ``None`` (a parameter the objective does not depend on, alike on every rank) stays ``None``."""
    present = [i for i, t in enumerate(tensors) if t is not None]
    out: list[Tensor | None] = list(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i in present:
        by_dtype.setdefault(tensors[i].dtype, []).append(i)
    for indices in by_dtype.values():
        chunk = [tensors[i] for i in indices]
        flat = _flat(chunk)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        flat.div_(world_size)
        for i, t in zip(indices, _unflat(flat, chunk)):
            out[i] = t
    return out


def average_gradients(params: Sequence[Tensor], world_size: int, group=None) -> None:
    """Replace every ``p.grad`` by the mean over the ranks (in place; ``None`` stays ``None``)."""
    grads = average_tensors([p.grad for p in params], world_size, group)
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g


def broadcast_tensors(tensors: Sequence[Tensor], src: int = 0, group=None) -> None:
    """Copy rank ``src``'s values of ``tensors`` into every rank's (in place, one flat buffer
    per dtype)."""
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    with torch.no_grad():
        for chunk in by_dtype.values():
            flat = _flat(chunk).clone()
            dist.broadcast(flat, src=src, group=group)
            for t, value in zip(chunk, _unflat(flat, chunk)):
                t.copy_(value)


__all__ = ["average_gradients", "average_tensors", "broadcast_tensors", "global_sum"]
