"""Interleaved timing of several step functions in one process, for the speed benchmarks.

Each round runs a block of ``steps`` calls of every function in turn (the order rotates from round
to round), so drifts in machine load hit all alike; the reported time of a function is the median
over rounds of its per-step block time, and a ratio a/b is the median over rounds of the ratio of
the two blocks of the same round.  The clock is the process CPU time (``cpu``: other processes on a
shared machine do not count; meaningful on the CPU) or wall time (``wall``; on CUDA, with a
synchronisation around every block).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

import torch


def resolve_device(name: str) -> torch.device | None:
    """The device, or ``None`` (after a message) when it is CUDA and none is at hand."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {name}: CUDA is not available on this machine; skipping this benchmark")
        return None
    return device


def clock_for(device: torch.device, clock: str | None) -> str:
    return clock if clock is not None else ("wall" if device.type == "cuda" else "cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(steps: Mapping[str, Callable[[], object]], device: torch.device, *, rounds: int = 7,
                block: int = 10, warmup: int = 5, clock: str = "cpu") -> dict[str, list[float]]:
    """Per-step seconds of every function in every round: ``{name: [round times]}``."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    _sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn = steps[name]
            _sync(device)
            t0 = now()
            for _ in range(block):
                fn()
            _sync(device)
            times[name].append((now() - t0) / block)
    return times


def median(values) -> float:
    return statistics.median(values)


def ratio(times: Mapping[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of time[a] / time[b] (same round)."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def peak_memory(device: torch.device) -> str:
    """Peak memory of this process so far: CUDA's allocator peak, or the resident set's maximum."""
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.1f} MiB (CUDA allocator peak)"
    import resource
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB (process max RSS)"


def saved_for_backward(loss_fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of ``loss_fn()`` (distinct
    storages counted once): the step's activation memory, comparable across implementations and
    devices."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    del loss
    return sum(seen.values())
