"""What the drivers of several searches (restarts, the runs of ``enumerate``) need to resume.

Their checkpoint is the running search's ``BilevelSearch.state_dict()`` with a ``"driver"``
entry (:func:`driver_entry`): the driver's kind, how many searches it runs, which one is running
(``current``; equal to the count once all are done) and, for each finished one, what the driver
keeps of it (its final search state and the figures it was judged by).  On resume the finished
searches are not run again: :func:`restored_result` rebuilds a finished search's result from its
final state, and the running one continues from the checkpoint (``BilevelSearch.run(resume=True)``).
The driver rebuilds the result it reports from the saved state in an uninterrupted run too, so a
killed and resumed run reports exactly what an uninterrupted one does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from bnas_pyro.analysis.result import SearchResult
from bnas_pyro.inference import sync_guide_coefficients

from .bilevel import BilevelSearch
from .checkpoint import CheckpointError, checkpoint_path, load_checkpoint


def driver_entry(kind: str, total: int, current: int, finished: Mapping[int, Any],
                 **more: Any) -> dict[str, Any]:
    """The ``"driver"`` entry of a checkpoint: ``kind`` (``restarts`` or ``enumerate``),
    ``total`` searches, the ``current`` one, the ``finished`` ones by index."""
    return {"driver": {"kind": kind, "total": int(total), "current": int(current),
                       "finished": dict(finished), **more}}


def load_driver_state(directory: "str | os.PathLike | None", kind: str, total: int
                      ) -> tuple[dict[str, Any] | None, dict[int, Any]]:
    """``(checkpoint, finished)`` from ``directory`` for resuming a driver of ``kind`` with
    ``total`` searches (``(None, {})`` when there is no checkpoint yet); a checkpoint of another
    driver or count raises :class:`CheckpointError` naming the file."""
    if directory is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    state = load_checkpoint(directory)
    if state is None:
        return None, {}
    path = checkpoint_path(directory)
    driver = state.get("driver")
    if not isinstance(driver, Mapping):
        raise CheckpointError(f"{path} is the checkpoint of a single search, not of the "
                              f"{kind} driver: resume it with the configuration it was written by")
    if driver.get("kind") != kind or int(driver.get("total", -1)) != int(total):
        raise CheckpointError(f"{path} is the checkpoint of a {driver.get('kind')} driver of "
                              f"{driver.get('total')} searches, not of {kind} with {total}")
    finished = {int(k): v for k, v in dict(driver.get("finished") or {}).items()}
    return state, finished


def restored_result(search: BilevelSearch, state: Mapping[str, Any]) -> SearchResult:
    """The result a finished search ended with, rebuilt in ``search`` (fresh, same build) from
    its final ``state``: theta, h, history, and the coefficients, temperature and guide settings
    of its last outer step."""
    search.load_state_dict(state)
    search.coefficients = search.schedule(max(search.step - 1, 0), search.outer_steps)
    search.model.temperature = search.coefficients.c_temp
    sync_guide_coefficients(search.guide, search.coefficients)
    wall = search.history[-1].wall_time if search.history else 0.0
    return SearchResult(search.model, search.guide, list(search.history), wall,
                        info={"strategy": search.strategy.name})


def checkpointing(search: BilevelSearch, directory: "str | os.PathLike | None",
                  extra: Mapping[str, Any]) -> BilevelSearch:
    """Let ``search`` write its checkpoints (with the driver's ``extra``) into ``directory``."""
    if directory is not None:
        search.checkpoint_dir = Path(directory)
        search.checkpoint_extra = dict(extra)
    return search


__all__ = ["checkpointing", "driver_entry", "load_driver_state", "restored_result"]
