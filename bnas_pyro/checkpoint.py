"""Saving and restoring the whole state of a search, so a killed run resumes exactly.

The state holds theta (the guide), h (the model's hyperparameters), both optimisers, the
strategy's own state (e.g. HOAG's tolerance and warm start, random search's best point), the
history, and every random state the run draws from: torch's CPU generator, the generator of the
device the parameters live on (when that is not the CPU), both used by the reparameterised
samples, and the minibatch sampler's generator and position.  Files are written to a temporary
name and renamed, so a kill mid-write never leaves a broken checkpoint.

:class:`RandomState` is also what the hypergradient strategies use for common random numbers
(METHOD.md section 5): they capture the generators before an inner step and replay the same
noise when they differentiate through that step again.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


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
