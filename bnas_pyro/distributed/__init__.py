"""Data-parallel search on ``torch.distributed``: shards, global sums, averaged gradients, and
errors that name a lost rank (``torchrun --nproc-per-node N -m bnas_pyro search ...``)."""

from .collectives import average_gradients, average_tensors, broadcast_tensors, global_sum
from .group import (DEFAULT_TIMEOUT, DataParallel, current, init_from_environment,
                    world_size_from_environment)
from .optimizer import GradientAveragingOptimizer
from .shard import Shard
from .watchdog import Heartbeat, RankLostError

__all__ = ["DEFAULT_TIMEOUT", "DataParallel", "GradientAveragingOptimizer", "Heartbeat",
           "RankLostError", "Shard", "average_gradients", "average_tensors", "broadcast_tensors", "current",
           "global_sum", "init_from_environment", "world_size_from_environment"]
