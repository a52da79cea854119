"""Snapshots of torch's random generators, for common random numbers and exact resumption.

METHOD.md section 5: the hypergradient strategies capture the generators before an inner step and
replay the same noise when they differentiate through that step again; ``fixed_noise`` searches
replay one snapshot at every evaluation (a sample-average approximation).  Checkpoints store the
same snapshots, so a resumed search draws what the uninterrupted one would have drawn.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor


@dataclass
class RandomState:
    """The state of torch's CPU generator and, if ``device`` is not the CPU, of its generator.

    ``RandomState.capture(device)`` snapshots both; ``restore()`` puts them back; ``replay()`` is
    a context manager that runs a block with this noise and then returns the generators to where
    they were, so replaying a step does not shift the random stream of the run.
    """

    cpu: Tensor
    device: torch.device | None = None
    device_state: Tensor | None = None

    @classmethod
    def capture(cls, device: "torch.device | str | None" = None) -> "RandomState":
        dev = torch.device("cpu") if device is None else torch.device(device)
        if dev.type == "cpu":
            return cls(torch.get_rng_state())
        module = torch.get_device_module(dev.type)
        return cls(torch.get_rng_state(), dev, module.get_rng_state(dev))

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.device is not None and self.device_state is not None:
            torch.get_device_module(self.device.type).set_rng_state(self.device_state, self.device)

    @contextmanager
    def replay(self) -> Iterator[None]:
        saved = RandomState.capture(self.device)
        self.restore()
        try:
            yield
        finally:
            saved.restore()

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "device": None if self.device is None else str(self.device),
                "device_state": self.device_state}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "RandomState":
        device = state.get("device")
        return cls(state["cpu"], None if device is None else torch.device(device),
                   state.get("device_state"))
