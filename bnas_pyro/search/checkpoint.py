"""Saving and restoring the whole state of a search, so a killed run resumes exactly.

The state holds theta (the guide), h (the model's hyperparameters), both optimisers, the
strategy's own state (e.g. HOAG's tolerance and warm start, random search's best point), the
history, and every random state the run draws from: torch's CPU generator, the generator of the
device the parameters live on (when that is not the CPU), both used by the reparameterised
samples, and the minibatch sampler's generator and position.  A search run by a driver of several
searches (restarts, the runs of ``enumerate``) adds a ``"driver"`` entry: which search is running
and what the finished ones found (:mod:`bnas_pyro.search.restarts`,
:mod:`bnas_pyro.search.enumeration`).

Files are written atomically (:mod:`bnas_pyro.atomic_files`: temporary file, fsync, rename), so a
kill or a full disk mid-write never leaves a broken checkpoint: a failed write raises
:class:`CheckpointWriteError` naming the path and leaves the previous checkpoint as it was.  A
checkpoint that cannot be read raises :class:`CheckpointError` naming the file.

The random states are :class:`~bnas_pyro.random_state.RandomState` snapshots.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from bnas_pyro.atomic_files import FileWriteError, torch_save

CHECKPOINT_NAME = "checkpoint.pt"
#: the entries every search state holds (``BilevelSearch.state_dict()``)
REQUIRED_KEYS = ("step", "guide", "hyper", "inner_optimizer", "hyper_optimizer", "strategy",
                 "history", "torch_rng")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the search (the message names the file)."""


class CheckpointWriteError(FileWriteError):
    """A checkpoint could not be written: the previous one is intact, the search state is still in
    memory (``state``)."""

    def __init__(self, path: "str | os.PathLike", cause: BaseException, state: Any = None):
        super().__init__(path, cause)
        self.state = state
        self.args = (self.args[0], f"{self.args[1]}; the search state is kept in memory")

    def __reduce__(self):
        return type(self), (self.path, self.cause, self.state)


def checkpoint_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / CHECKPOINT_NAME


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically (fsync-ed); on failure
    :class:`CheckpointWriteError` (an ``OSError``) naming the path, the old file kept."""
    path = checkpoint_path(directory)
    try:
        return torch_save(state, path)
    except FileWriteError as err:
        raise CheckpointWriteError(path, err.cause, state) from err.cause


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The state in ``directory/checkpoint.pt`` (``None`` if there is none); a file that is not
    a readable search state raises :class:`CheckpointError` naming it."""
    path = checkpoint_path(directory)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported by name
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'truncated?'})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a bnas-pyro checkpoint (it holds a "
                              f"{type(state).__name__}, not a search state)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a search state: it lacks {', '.join(missing)}")
    return state


__all__ = ["CHECKPOINT_NAME", "CheckpointError", "CheckpointWriteError", "checkpoint_path",
           "load_checkpoint", "save_checkpoint"]
