"""Saving and restoring the whole state of a search, so a killed run resumes exactly.

The state holds theta (the guide), h (the model's hyperparameters), both optimisers, the
strategy's own state (e.g. HOAG's tolerance and warm start, random search's best point), the
history, and every random state the run draws from: torch's CPU generator, the generator of the
device the parameters live on (when that is not the CPU), both used by the reparameterised
samples, and the minibatch sampler's generator and position.  Files are written to a temporary
name and renamed, so a kill mid-write never leaves a broken checkpoint.

The random states are :class:`~bnas_pyro.random_state.RandomState` snapshots.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

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
