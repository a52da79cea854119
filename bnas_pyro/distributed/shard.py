"""One rank's part of a global minibatch, as a search hands it to the objectives."""

from __future__ import annotations

from torch import Tensor


class Shard(tuple):
    """``(x, y, num_data)`` of rank r's shard B_r of a global minibatch B, with
    ``fraction`` = |B_r| / |B|: the plate scales the shard's log-likelihood by N / |B_r|, and
    ``fraction`` times that, summed over the ranks, is the global batch's N / |B| estimate
    (:mod:`bnas_pyro.distributed.collectives`)."""

    fraction: float

    def __new__(cls, x: Tensor, y: Tensor | None, num_data: int, fraction: float) -> "Shard":
        self = super().__new__(cls, (x, y, num_data))
        self.fraction = float(fraction)
        return self

    def __reduce__(self):
        return (Shard, (self[0], self[1], self[2], self.fraction))


__all__ = ["Shard"]
