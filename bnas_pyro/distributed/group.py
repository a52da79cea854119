"""The process group of a data-parallel search: who this rank is, and what it shares.

:func:`init_from_environment` starts ``torch.distributed`` from the variables ``torchrun`` sets
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; the ``env://`` method), with the
``gloo`` backend on the CPU and ``nccl`` on CUDA.  :class:`DataParallel` is what a search needs of
it: the rank's shard of a global minibatch, the global sum of the log-likelihood, the mean of the
gradients, one broadcast of the parameters at the start, rank 0 as the only writer, and a
:meth:`DataParallel.guard` that turns a failed collective into a :class:`RankLostError` naming
the rank that was lost.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from datetime import timedelta
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from .collectives import average_gradients, average_tensors, broadcast_tensors, global_sum
from .watchdog import Heartbeat, RankLostError

#: seconds a collective may wait for a peer before the search stops (``BNAS_PYRO_TIMEOUT``)
DEFAULT_TIMEOUT = 300.0

_CURRENT: "DataParallel | None" = None


class DataParallel:
    """One rank of R in a data-parallel search (METHOD.md section 3; formulas in
    :mod:`bnas_pyro.distributed.collectives`).

    Every rank holds the same theta, h and random generators; only the data differ: rank r
    evaluates the likelihood on its shard B_r of each global minibatch B.  Build it with
    :func:`init_from_environment` (or directly, on a process group already initialised).

    Args:
        rank, world_size: this process and the number of processes.
        group: the process group (``None``: the default one).
        heartbeat: the watchdog that names a lost rank (``None``: errors are passed on as they are).
    """

    def __init__(self, rank: int, world_size: int, group=None, heartbeat: Heartbeat | None = None):
        self.rank, self.world_size = int(rank), int(world_size)
        self.group = group
        self.heartbeat = heartbeat

    @property
    def is_main(self) -> bool:
        """Rank 0: the one rank that writes the run directory and the checkpoints."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, world_size={self.world_size})"

    # ------------------------------------------------------------------ the data
    def shard(self, indices: Tensor) -> Tensor:
        """This rank's part of a global minibatch: the r-th of R contiguous, disjoint pieces
        (sizes differ by at most one)."""
        if indices.shape[0] < self.world_size:
            raise ValueError(f"a global batch of {indices.shape[0]} rows cannot be split over "
                             f"{self.world_size} ranks: use batch_size >= {self.world_size}")
        return indices.tensor_split(self.world_size)[self.rank]

    # ------------------------------------------------------------------ what is shared
    def global_sum(self, tensor: Tensor) -> Tensor:
        """sum over the ranks, differentiable (:func:`~bnas_pyro.distributed.collectives.global_sum`)."""
        return global_sum(tensor, self.group)

    def average(self, tensors: Sequence[Tensor | None]) -> list[Tensor | None]:
        """The mean over the ranks of each tensor (``None`` stays ``None``)."""
        return average_tensors(tensors, self.world_size, self.group)

    def average_gradients(self, params: Sequence[Tensor]) -> None:
        average_gradients(params, self.world_size, self.group)

    def broadcast(self, tensors: Sequence[Tensor], src: int = 0) -> None:
        """Rank ``src``'s values into every rank's ``tensors`` (in place)."""
        broadcast_tensors(list(tensors), src, self.group)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` (picklable) on every rank."""
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src, group=self.group)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0; ``None`` on the others."""
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=self.group)
        return out

    def barrier(self) -> None:
        dist.barrier(group=self.group)

    def wait_for_all(self, name: str) -> None:
        """Wait, as long as it takes, until every rank gets here; a rank lost meanwhile is
        named (a plain barrier without the watchdog)."""
        if self.heartbeat is None:
            self.barrier()
        else:
            self.heartbeat.wait_for_all(name)

    def mark_step(self, step: int) -> None:
        if self.heartbeat is not None:
            self.heartbeat.mark_step(step)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run a block whose collectives may fail because a peer was lost: a failure of this
        rank's own is told to the others (and raised here as it is); a failed collective
        becomes a :class:`RankLostError` that names the lost rank."""
        try:
            yield
        except RankLostError:
            raise
        except (dist.DistError, RuntimeError) as err:
            if self.heartbeat is None or not _is_collective_error(err):
                self._report(err)
                raise
            raise self.heartbeat.diagnose(err) from err
        except BaseException as err:
            self._report(err)
            raise

    def _report(self, err: BaseException) -> None:
        if self.heartbeat is not None:
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            self.heartbeat.report_failure(last)

    def close(self) -> None:
        """Stop the heartbeat and leave the process group."""
        global _CURRENT
        if self.heartbeat is not None:
            self.heartbeat.close()
        if dist.is_initialized():
            dist.destroy_process_group()
        if _CURRENT is self:
            _CURRENT = None


def _is_collective_error(err: BaseException) -> bool:
    if isinstance(err, dist.DistError):
        return True
    text = str(err).lower()
    return any(word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout",
                                         "peer", "socket", "broken pipe"))


def world_size_from_environment() -> int:
    """``WORLD_SIZE`` as ``torchrun`` sets it (1 when the variable is absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_environment(backend: str | None = None, timeout: float | None = None,
                          device: "torch.device | str | None" = None) -> DataParallel | None:
    """Start the process group ``torchrun`` describes and return this rank's
    :class:`DataParallel` (``None`` when there is one process).

    Args:
        backend: ``"gloo"`` or ``"nccl"`` (default: ``nccl`` when ``device`` is CUDA, else
            ``gloo``).
        timeout: seconds a collective waits for a peer (default: ``BNAS_PYRO_TIMEOUT`` or
            :data:`DEFAULT_TIMEOUT`).
        device: the device the search runs on; on CUDA, ``LOCAL_RANK`` picks the GPU.
    """
    global _CURRENT
    world = world_size_from_environment()
    if world <= 1:
        return None
    if _CURRENT is not None:
        return _CURRENT
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {name} is not set: start the processes "
                               "with torchrun (torchrun --nproc-per-node N -m bnas_pyro search ...)")
    seconds = float(os.environ.get("BNAS_PYRO_TIMEOUT", DEFAULT_TIMEOUT) if timeout is None
                    else timeout)
    if not seconds > 0:
        raise ValueError(f"the distributed timeout must be > 0 seconds, got {seconds}")
    dev = torch.device("cpu") if device is None else torch.device(device)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", timeout=timedelta(seconds=seconds))
    rank = dist.get_rank()
    heartbeat = Heartbeat(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), rank,
                          dist.get_world_size(), stale=min(5.0, seconds))
    _CURRENT = DataParallel(rank, dist.get_world_size(), None, heartbeat)
    return _CURRENT


def current() -> DataParallel | None:
    """The :class:`DataParallel` that :func:`init_from_environment` started (``None``: one
    process)."""
    return _CURRENT


__all__ = ["DEFAULT_TIMEOUT", "DataParallel", "RankLostError", "current", "init_from_environment",
           "world_size_from_environment"]
