"""One rank's part of a global minibatch, as a search hands it to the objectives."""

from __future__ import annotations

from torch import Tensor


class Shard(tuple):
    """``(x, y, num_data)`` of rank r's shard B_r of a global minibatch B, with
    ``fraction`` = |B_r| / |B|: the plate scales the shard's log-likelihood by N / |B_r|, and
    ``fraction`` times that, summed over the ranks, is the global batch's N / |B| estimate
    (:mod:`bnas_pyro.distributed.collectives`).

    ``summed=False`` asks for rank r's *share* instead, R * fraction * loglik_r, with no
    collective: the mean of the shares over the ranks is the global term, and so is the mean
    of their gradients, which a step that all-reduces its gradients anyway takes in the same
    all-reduce."""

    fraction: float
    summed: bool

    def __new__(cls, x: Tensor, y: Tensor | None, num_data: int, fraction: float,
                summed: bool = True) -> "Shard":
        self = super().__new__(cls, (x, y, num_data))
        self.fraction = float(fraction)
        self.summed = bool(summed)
        return self

    def __reduce__(self):
        return (Shard, (self[0], self[1], self[2], self.fraction, self.summed))


__all__ = ["Shard"]
