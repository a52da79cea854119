"""The drive stage of a run: one search, several restarts, or the runs of ``enumerate``.

Each driver returns a :class:`Driven`: the :class:`~bnas_pyro.analysis.result.SearchResult` that
the run reports (for restarts and enumeration, the one with the highest final ELBO, with every
restart or run in its ``info``).  Each leaves in the run directory's ``checkpoint.pt`` the state
the reported search ended in: a :meth:`BilevelSearch.state_dict
<bnas_pyro.search.bilevel.BilevelSearch.state_dict>` in every case, loadable by the same resume
path (:meth:`~bnas_pyro.search.bilevel.BilevelSearch.load_state_dict`).  Every search writes
it every ``checkpoint_every`` outer steps and at its last; restarts and enumeration add which
search is running and what the finished ones found (:mod:`bnas_pyro.search.resume`), and end
with the kept one's state.  With ``resume=True`` every driver continues from that checkpoint
where it stopped, and reports what an uninterrupted run reports.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from bnas_pyro.analysis.metrics import posterior_predictive
from bnas_pyro.analysis.result import SearchResult
from bnas_pyro.data import SplitData
from bnas_pyro.distributed import current as current_parallel
from bnas_pyro.modes import EnumerateMode, Mode
from bnas_pyro.objectives import estimate_elbo, guide_terms
from bnas_pyro.search.bilevel import BilevelSearch
from bnas_pyro.search.checkpoint import save_checkpoint
from bnas_pyro.search.enumeration import finished_entry, run_enumeration
from bnas_pyro.search.restarts import run_restarts

from .builders import SearchParts, build_guide, build_model, build_parts, search_strategy
from .config import ConfigError, RunConfig


class ProgressCallback:
    """Puts the ELBO (coefficients 1, on the training data) and the validation metric on the bar.

    Every ``every`` outer steps: one draw of the ELBO on (up to 2048 rows of) the training data
    and the posterior-predictive validation accuracy (or RMSE) from ``draws`` draws of q.
    """

    def __init__(self, data: SplitData, every: int = 1, draws: int = 4):
        self.data, self.every, self.draws = data, int(every), int(draws)
        self.metric = "val_acc" if data.task == "classification" else "val_rmse"
        self.last: dict[str, float] = {}

    def __call__(self, search, record) -> dict[str, Any]:
        if record.step % self.every and record.step != search.outer_steps - 1:
            return {}
        d = self.data
        x, y = d.x_train[:2048], d.y_train[:2048]
        # forked: monitoring must not shift the search's random stream (results would then
        # depend on how often it is shown)
        with torch.no_grad(), torch.random.fork_rng(devices=_devices(x)):
            elbo = float(guide_terms(search.model, search.guide, x, y, len(d.y_train)).elbo)
            pred = posterior_predictive(search.model, search.guide, d.x_val, None, self.draws)
        if d.task == "classification":
            value = float((pred.probs.argmax(-1) == d.y_val).double().mean())
        else:
            value = float((pred.mean - d.y_val).pow(2).mean().sqrt()) * d.y_std
        self.last = {"elbo": elbo, self.metric: value}
        return dict(self.last)


def _devices(x: torch.Tensor) -> list:
    """The CUDA devices whose generator a fork must save (none for CPU data)."""
    return [x.device] if x.device.type == "cuda" else []


@dataclass
class Driven:
    """What a driver returns: the reported result and the progress callback (its last values
    and the name of the validation metric go to the summary).  ``result`` is ``None`` on the
    ranks other than 0 of a data-parallel run (rank 0 reports)."""

    result: SearchResult | None
    callback: ProgressCallback


def make_search(config: RunConfig, model, guide, mode, strategy: str, inner: int, outer: int,
                directory: Path | None, progress: bool,
                callbacks: Sequence[Callable]) -> BilevelSearch:
    """The :class:`BilevelSearch` a configuration describes (errors name the ``search`` key).

    A :class:`~bnas_pyro.modes.Mode` is run by :meth:`BilevelSearch.for_mode` (hold-out Q for
    a hold-out mode, h fixed for ``ml`` and ``map``, the mode's guide family); any other
    registered schedule as it is.
    """
    options = dict(
        inner_steps=inner, outer_steps=outer, lr=config.search.lr, hyper_lr=config.search.hyper_lr,
        batch_size=config.search.batch_size, num_particles=config.search.num_particles,
        validation=config.search.validation, seed=config.seed, checkpoint_dir=directory,
        checkpoint_every=config.search.checkpoint_every, progress=progress, callbacks=callbacks,
        hypergradient_options=config.search.hypergradient_options, parallel=current_parallel())
    try:
        if isinstance(mode, Mode):
            return BilevelSearch.for_mode(model, guide, mode, hypergradient=strategy, **options)
        return BilevelSearch(model, guide, mode, strategy, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError("search", str(err)) from None


def drive_single(parts: SearchParts, directory: Path, progress: bool,
                 resume: bool = False) -> Driven:
    """One search; it checkpoints itself into ``directory`` every ``checkpoint_every`` steps
    (``resume``: continues from the checkpoint there)."""
    config, data = parts.config, parts.data
    callback = ProgressCallback(data, config.search.eval_every)
    search = make_search(config, parts.model, parts.guide, parts.mode, parts.strategy,
                         parts.inner_steps, parts.outer_steps, directory, progress, [callback])
    result = search.run(data.x_train, data.y_train, data.x_val, data.y_val, resume=resume)
    return Driven(result, callback)


def restart_search(config: RunConfig, split_seed: int, progress: bool, seed: int) -> BilevelSearch:
    """``build(seed)`` of :func:`bnas_pyro.search.restarts.run_restarts`: a fresh model, guide and
    search with initialisation seed ``seed`` on the run's split (module level: picklable for
    worker processes)."""
    run_config = config.replace(seed=seed, **{"data.seed": split_seed})
    parts = build_parts(run_config)
    callbacks = [ProgressCallback(parts.data, config.search.eval_every)]
    return make_search(run_config, parts.model, parts.guide, parts.mode, parts.strategy,
                       parts.inner_steps, parts.outer_steps, None, progress, callbacks)


def drive_restarts(parts: SearchParts, directory: Path, progress: bool,
                   resume: bool = False) -> Driven:
    """``search.restarts`` searches; the one with the highest final ELBO is the result
    (``resume``: finished restarts are not run again, the running one continues)."""
    config, data = parts.config, parts.data
    split_seed = config.seed if config.data.seed is None else config.data.seed
    processes = config.search.restart_processes
    build = functools.partial(restart_search, config, split_seed, progress and processes == 1)
    parallel = current_parallel()   # restart r on rank r mod R; the report on rank 0
    report = run_restarts(build, data.x_train, data.y_train, config.search.restarts,
                          seed=config.seed, processes=processes, x_val=data.x_val, y_val=data.y_val,
                          elbo_particles=50, num_threads=config.threads,
                          checkpoint_dir=directory, resume=resume, parallel=parallel)
    callback = ProgressCallback(data, config.search.eval_every)
    if report is None:
        return Driven(None, callback)
    for record in report.best.history:  # the progress callback's last values, for the summary
        callback.last = {k: v for k, v in record.extra.items()}
    return Driven(report.best, callback)


def drive_enumeration(parts: SearchParts, directory: Path | None, progress: bool,
                      resume: bool = False) -> Driven:
    """The ``enumerate`` mode: runs f_1..f_N; the run with the highest ELBO is the result, every
    run's structure and ELBO go to its ``info["enumeration"]`` (``resume``: finished runs are
    not run again, the running one continues).  Run i's ELBO is estimated with its own seed
    (``seed + i``), so it does not depend on the runs before it."""
    config, data, space, mode = parts.config, parts.data, parts.space, parts.mode
    if mode.num_runs is None and space.num_structures > 20:
        raise ConfigError("search.mode_options.num_runs",
                          f"enumerate visits all {space.num_structures} structures by default: "
                          "give num_runs")
    if config.search.validation:
        raise ConfigError("search.validation", "the enumerate mode does not take a validation split")
    if config.search.restarts > 1:
        raise ConfigError("search.restarts", "the enumerate mode runs its own sequence of searches; "
                                             "set restarts to 1")
    callback = ProgressCallback(data, config.search.eval_every)

    def factory(i: int):
        run_config = config.replace(seed=config.seed + i)
        torch.manual_seed(config.seed + i)
        model = build_model(run_config, space, data)
        return model, build_guide(run_config, model, data)

    parallel = current_parallel()   # each run data-parallel over all ranks; the report on rank 0
    try:
        runs = run_enumeration(
            mode, factory, data.x_train, data.y_train, seed=config.seed, keep_results=True,
            inner_steps=parts.inner_steps, outer_steps=parts.outer_steps, lr=config.search.lr,
            hyper_lr=config.search.hyper_lr, batch_size=config.search.batch_size,
            num_particles=config.search.num_particles, progress=progress, callbacks=[callback],
            hypergradient=parts.strategy, hypergradient_options=config.search.hypergradient_options,
            checkpoint_dir=directory, checkpoint_every=config.search.checkpoint_every,
            resume=resume, parallel=parallel)
    except (TypeError, ValueError) as err:
        raise ConfigError("search", str(err)) from None
    if parallel is not None and not parallel.is_main:   # rank 0 reports
        return Driven(None, callback)
    elbos = []
    for i, r in enumerate(runs.results):
        with torch.random.fork_rng(devices=_devices(data.x_train)):
            torch.manual_seed(config.seed + i)
            elbos.append(estimate_elbo(r.model, r.guide, data.x_train, data.y_train,
                                       num_particles=10)[0])
    best = max(range(len(elbos)), key=elbos.__getitem__)
    chosen = runs.results[best]
    chosen.info["enumeration"] = {"structures": runs.structures,
                                  "probabilities": runs.probabilities, "elbos": elbos,
                                  "num_distinct": runs.num_distinct, "chosen_run": best}
    if directory is not None:
        save_checkpoint(directory, {**runs.states[best], **finished_entry(runs)})
    return Driven(chosen, callback)


def drive(parts: SearchParts, directory: Path | None, progress: bool,
          resume: bool = False) -> Driven:
    """Run the search ``parts`` describe with the driver its mode and restarts ask for; each
    leaves the final search state in ``directory/checkpoint.pt`` (``resume``: continue from
    it).  In a data-parallel run (``torchrun``), the ranks other than 0 drive with
    ``directory=None`` and get ``Driven(None, ...)``: rank 0 alone writes and reports."""
    if isinstance(parts.mode, EnumerateMode):
        return drive_enumeration(parts, directory, progress, resume)
    if parts.config.search.restarts > 1:
        return drive_restarts(parts, directory, progress, resume)
    return drive_single(parts, directory, progress, resume)


__all__ = ["Driven", "ProgressCallback", "drive", "drive_enumeration", "drive_restarts",
           "drive_single", "make_search", "restart_search", "search_strategy"]
