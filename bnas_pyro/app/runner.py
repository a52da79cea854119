"""One structure search from a :class:`~bnas_pyro.app.config.RunConfig` to a filled run directory.

:func:`run_search` is what ``bnas-pyro search`` and ``make demo`` run, in five stages:

1. **build** (:mod:`bnas_pyro.app.builders`): load and split the data set, build the space, the
   Pyro model, the guide and the mode;
2. **drive** (:mod:`bnas_pyro.app.drivers`): one :class:`~bnas_pyro.search.bilevel.BilevelSearch`,
   several restarts, or the runs of ``enumerate``; each returns one
   :class:`~bnas_pyro.analysis.result.SearchResult` and the search state for ``checkpoint.pt``;
3. **analyse** (:func:`analyse`): the supernet's posterior predictive on the test split, the ELBO,
   C_param and C_struct, the relative densities rho, PSIS-LOO, ArviZ InferenceData;
4. **retrain** (:func:`retrain`): the chosen structure as a plain network, retrained on train
   (+ validation) and scored on the test split;
5. **write** (:mod:`bnas_pyro.app.run_directory`): ``result.json`` is the result's
   :meth:`~bnas_pyro.analysis.result.SearchResult.to_dict` with an ``analysis`` block (one
   versioned schema), and the network, posterior and plots beside it.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyro
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bnas_pyro.analysis.arviz_data import loo as psis_loo
from bnas_pyro.analysis.arviz_data import to_inference_data
from bnas_pyro.analysis.collapse import collapse_statistics
from bnas_pyro.analysis.complexity import (
    parametric_complexity,
    relative_density,
    structural_complexity,
)
from bnas_pyro.analysis.diagnostics import search_warnings
from bnas_pyro.analysis.ranking import unrankable_reason
from bnas_pyro.analysis.export import build_network
from bnas_pyro.analysis.metrics import evaluate_bayesian, evaluate_network
from bnas_pyro.analysis.result import SearchResult
from bnas_pyro.data import SplitData
from bnas_pyro.distributed import init_from_environment
from bnas_pyro.objectives import estimate_elbo
from bnas_pyro.search_space import SearchSpace
from bnas_pyro.training import residual_std, train_network

from .builders import SearchParts, build_parts
from .config import RunConfig
from .drivers import Driven, drive
from .run_directory import new_run_dir, open_run_dir, write_run

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ analyse
def complexity_measures(model, guide) -> dict[str, float]:
    """C_param and C_struct (METHOD.md section 4, :mod:`bnas_pyro.analysis.complexity`)."""
    return {"c_param": float(parametric_complexity(model, guide)),
            "c_struct": float(structural_complexity(model, guide))}


def relative_densities(model, guide) -> Tensor:
    """rho = exp(-mu^2 / (2 sigma^2)) of every weight
    (:func:`bnas_pyro.analysis.complexity.relative_density`)."""
    return torch.as_tensor(relative_density(model, guide)).detach().flatten()


def histogram(values: Tensor, bins: int = 50) -> dict[str, Any]:
    """Counts of ``values`` (clamped to [0, 1]) in ``bins`` equal bins, for the rho plot."""
    v = values.double().clamp(0, 1).cpu()
    counts = torch.histc(v, bins=bins, min=0.0, max=1.0)
    return {"bin_edges": torch.linspace(0, 1, bins + 1).tolist(), "counts": counts.tolist(),
            "num_weights": int(v.numel()), "fraction_over_0.5": float((v > 0.5).double().mean()),
            "mean": float(v.mean())}


def analysis_rows(n: int, max_rows: int | None, seed: int) -> Tensor | None:
    """A seeded random subset of ``max_rows`` of ``n`` training rows (``None``: all rows)."""
    if max_rows is None or n <= max_rows:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:max_rows].sort().values


def structure_ranking(config: RunConfig, data: SplitData, result: SearchResult
                      ) -> list[dict[str, Any]] | None:
    """The top ``analysis.rank_k`` structures by refitted evidence on the training split, for any
    guide (:func:`bnas_pyro.analysis.ranking.rank_structures`); the refits on minibatches of
    ``analysis.rank_batch_size`` rows (full batch when the split is no larger), the evidence on
    at most ``analysis.max_rows`` of them, scaled to all.  ``None`` when ``rank_k`` is 0 or the
    model cannot be ranked (a warning says why)."""
    a = config.analysis
    if a.rank_k <= 0:
        return None
    reason = unrankable_reason(result.model)
    if reason is not None:
        warnings.warn(f"no structure ranking: {reason}", stacklevel=2)
        return None
    n = len(data.y_train)
    batch = None if a.rank_batch_size is None or n <= a.rank_batch_size else a.rank_batch_size
    return [r.to_dict() for r in result.rank(data.x_train, data.y_train, k=a.rank_k,
                                             refit_steps=a.rank_refit_steps,
                                             num_draws=a.rank_draws, seed=config.seed,
                                             batch_size=batch, max_rows=a.max_rows)]


@dataclass
class Analysis:
    """What the analysis of q gives: the figures for ``result.json`` and the InferenceData."""

    supernet_test: dict[str, float]
    figures: dict[str, Any]
    idata: Any


def analyse(config: RunConfig, data: SplitData, result: SearchResult,
            progress: bool = False) -> Analysis:
    """The supernet's test metrics under q, the ELBO, C_param, C_struct, rho, PSIS-LOO.

    The distributions' argument checks are off here (the search has run with them: the values
    are the ones it checked); on a large space they cost a fifth of the analysis time.
    """
    with pyro.validation_enabled(False):
        return _analyse(config, data, result, progress)


def _analyse(config: RunConfig, data: SplitData, result: SearchResult,
             progress: bool) -> Analysis:
    a = config.analysis
    model, guide = result.model, result.guide
    bar = tqdm(total=5, desc="analysis", disable=not progress, leave=False)
    supernet_test = evaluate_bayesian(model, guide, data.x_test, data.y_test, data.task,
                                      num_draws=a.predictive_draws, y_std=data.y_std)
    bar.update()
    n = len(data.y_train)
    rows = analysis_rows(n, a.max_rows, config.seed)
    x_fit, y_fit = (data.x_train, data.y_train) if rows is None else (data.x_train[rows],
                                                                      data.y_train[rows])
    m = len(y_fit)
    elbo, elbo_se = estimate_elbo(model, guide, x_fit, y_fit, n,
                                  num_particles=min(50, a.predictive_draws))
    bar.update()
    complexity = complexity_measures(model, guide)
    rho = relative_densities(model, guide)
    bar.update()
    idata = to_inference_data(result, x=x_fit, y=y_fit, num_draws=a.draws,
                              num_chains=a.chains, seed=config.seed)
    bar.update()
    loo = psis_loo(idata, pointwise=True)
    bad_k = int((loo.pareto_k > 0.7).sum())
    if bad_k:
        warnings.warn(f"PSIS-LOO: {bad_k} of {loo.pareto_k.size} points have Pareto k > 0.7 "
                      f"(max {float(loo.pareto_k.max()):.2f}); elpd_loo is unreliable there, rank "
                      "structures by the refitted evidence (result.json 'ranking') instead",
                      stacklevel=2)
    ranking = structure_ranking(config, data, result)
    bar.update()
    bar.close()
    # a subset of m of the n rows: elpd_loo = n * mean of the pointwise values, its standard
    # error that of the full-data sum plus the simple-random-sampling error,
    # sqrt(n v + n^2 (1 - m / n) v / m) with v the pointwise variance (Magnusson et al. 2019)
    v = float(loo.se) ** 2 / m
    elpd = float(loo.elpd_loo) * n / m
    elpd_se = math.sqrt(n * v + n * n * (1 - m / n) * v / m)
    figures = {
        "elbo": elbo, "elbo_se": elbo_se,
        "elpd_loo": elpd, "elpd_loo_se": elpd_se,
        "c_param": complexity["c_param"], "c_struct": complexity["c_struct"],
        "rho_histogram": histogram(rho),
        "loo": {"elpd_loo": elpd, "se": elpd_se, "p_loo": float(loo.p_loo) * n / m,
                "rows": m, "of_rows": n,
                "pareto_k_max": float(loo.pareto_k.max()),
                "pareto_k_over_0.7": bad_k},
        "ranking": ranking,
    }
    return Analysis(supernet_test, figures, idata)


# ------------------------------------------------------------------------------ retrain
def derive_network(result: SearchResult, space: SearchSpace, structure: dict[str, str], seed: int,
                   init: str = "scratch") -> tuple[nn.Module, str]:
    """The chosen structure as a plain module.

    ``init="posterior_mean"``: ``result.derive(structure)`` (E_q[W],
    :mod:`bnas_pyro.analysis.export`); ``"scratch"``: the same network class with weights drawn
    afresh, N(0, init_std) per primitive (the same distribution as the guides' initial means),
    seeded by ``seed`` (:func:`bnas_pyro.analysis.export.build_network`).
    """
    if init == "posterior_mean":
        return result.derive(structure), "posterior_mean"
    gen = torch.Generator().manual_seed(seed)
    std = result.model.layout.init_std
    weights = (torch.randn(std.shape, generator=gen) * std).to(result.model.hyper.log_precision)
    return build_network(space, dict(structure), weights, {"structure": dict(structure),
                                                           "init": "scratch", "seed": seed}), "scratch"


@dataclass
class Retrained:
    """The derived, retrained network and its test metrics (``None`` / empty when disabled)."""

    network: nn.Module | None
    init: str | None
    test: dict[str, float]


def retrain(config: RunConfig, data: SplitData, space: SearchSpace, result: SearchResult,
            progress: bool = False) -> Retrained:
    """Derive the chosen structure, retrain it on train (+ validation), score it on test; the
    network then carries the data's standardisation and class names (it takes raw features)."""
    if not config.retrain.enabled:
        return Retrained(None, None, {})
    structure = result.structure
    init = config.retrain.init
    if init == "auto":   # E_q[W | s] of a structured guide is a fit of s's own weights
        init = "posterior_mean" if config.search.guide == "structured" else "scratch"
    network, init = derive_network(result, space, structure, config.seed, init)
    network = network.to(device=data.x_train.device, dtype=data.x_train.dtype)
    r = config.retrain
    x_fit, y_fit = data.x_train, data.y_train
    if r.use_validation:
        x_fit, y_fit = torch.cat([x_fit, data.x_val]), torch.cat([y_fit, data.y_val])
    train_network(network, x_fit, y_fit, data.task, epochs=r.epochs, batch_size=r.batch_size,
                  lr=r.lr, weight_decay=r.weight_decay, seed=config.seed, progress=progress)
    noise = residual_std(network, x_fit, y_fit) if data.task == "regression" else None
    test = evaluate_network(network, data.x_test, data.y_test, data.task, noise_std=noise,
                            y_std=data.y_std)
    if hasattr(network, "set_preprocessing_from"):
        network.set_preprocessing_from(data)
    return Retrained(network, init, test)


# ------------------------------------------------------------------------------ the run
@dataclass
class RunOutcome:
    """Everything a run produced (the run directory holds the same, on disk).

    ``summary`` is the content of ``result.json``: ``result.to_dict()`` with an ``analysis``
    block (data, metrics, collapse statistics, LOO, rho histogram, timings).
    """

    run_dir: Path
    config: RunConfig
    data: SplitData
    result: SearchResult
    summary: dict[str, Any]
    network: nn.Module | None = None
    idata: Any = None
    timings: dict[str, float] = field(default_factory=dict)


def run_summary(parts: SearchParts, driven: Driven, analysis: Analysis, retrained: Retrained,
                timings: dict[str, float], wall_time: float) -> dict[str, Any]:
    """``result.json``: the result's ``to_dict()`` and the ``analysis`` block."""
    config, data, result = parts.config, parts.data, driven.result
    headline = retrained.test if retrained.test else analysis.supernet_test
    metrics: dict[str, Any] = {f"test_{k}": v for k, v in headline.items()}
    metrics.update({f"supernet_test_{k}": v for k, v in analysis.supernet_test.items()})
    fig = analysis.figures
    metrics.update({k: fig[k] for k in ("elbo", "elbo_se", "elpd_loo", "elpd_loo_se",
                                        "c_param", "c_struct")})
    metrics.update({"wall_time": wall_time, "search_wall_time": timings["search"]})
    summary = result.to_dict(top=config.analysis.top_k, include_network=False,
                             include_history=True)
    summary["info"].setdefault("strategy", parts.strategy)
    summary["warnings"] = search_warnings(parts.space, result.structure, result.history)
    summary["analysis"] = {
        "data": {"name": data.name, "task": data.task, "sizes": data.sizes,
                 "input_shape": list(data.input_shape), "n_classes": data.n_classes,
                 "class_names": data.class_names},
        "mode": config.search.mode,
        "metrics": metrics,
        "metrics_source": "derived network, retrained" if retrained.test else "supernet under q",
        "derived": {"init": retrained.init,
                    "retrain_epochs": config.retrain.epochs if retrained.network else 0},
        "collapse": collapse_statistics(parts.space, result.structure),
        "rho_histogram": fig["rho_histogram"],
        "loo": fig["loo"],
        "ranking": fig.get("ranking"),
        "timings": dict(timings),
        "validation_metric": driven.callback.metric,
    }
    return summary


def run_search(config: RunConfig | None, run_dir: "str | Path | None" = None, progress: bool = True,
               log: Callable[[str], None] = logger.info, resume: bool = False,
               force: bool = False) -> RunOutcome | None:
    """Run the search described by ``config`` and fill a run directory (returned in the outcome).

    ``config.yaml`` is written first.  A ``run_dir`` that already holds a run is refused unless
    ``force`` (start over) or ``resume``: continue the run there from its checkpoint, with its
    own ``config.yaml`` (``config`` may then be ``None``), to the result an uninterrupted run
    gives (:func:`~bnas_pyro.app.run_directory.open_run_dir`).

    Started by ``torchrun`` (``WORLD_SIZE`` > 1), every process runs its share of a data-parallel
    search (:mod:`bnas_pyro.search.data_parallel`); rank 0 alone analyses, writes the run
    directory and returns the outcome, the other ranks return ``None``.
    """
    if resume:
        if run_dir is None:
            raise ValueError("resume=True needs the run directory")
        _, config = open_run_dir(run_dir, config, resume=True)
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        # before the build: on CUDA it picks this rank's device (LOCAL_RANK)
        parallel = init_from_environment(device=config.device)   # None: one process
        if parallel is not None and not parallel.is_main:
            drive(build_parts(config), None, False, resume)
            parallel.close()
            return None
        directory = new_run_dir(config) if run_dir is None else Path(run_dir)
        created = not directory.exists()
        if not resume:
            open_run_dir(directory, config, force=force)
        try:
            parts = build_parts(config)
        except BaseException:
            if created:   # data or space refused: leave no run directory holding a bare config
                shutil.rmtree(directory, ignore_errors=True)
            raise
        log(f"data: {parts.data.summary()}")
        log(f"space: {parts.space.num_structures} structures, "
            f"{parts.model.layout.num_parameters} weights; run directory: {directory}")
        t0 = time.perf_counter()
        driven = drive(parts, directory, progress, resume)
        if parallel is not None:
            parallel.close()
        t1 = time.perf_counter()
        analysis = analyse(config, parts.data, driven.result, progress)
        t2 = time.perf_counter()
        retrained = retrain(config, parts.data, parts.space, driven.result, progress)
        t3 = time.perf_counter()
        timings = {"search": t1 - t0, "analysis": t2 - t1, "retrain": t3 - t2}
        summary = run_summary(parts, driven, analysis, retrained, timings,
                              time.perf_counter() - start)
        for w in summary["warnings"]:
            logger.warning("%s; likely cause: %s", w["message"], w["cause"])
        outcome = RunOutcome(directory, config, parts.data, driven.result, summary,
                             retrained.network, analysis.idata)
        write_run(outcome)
        summary["analysis"]["metrics"]["wall_time"] = time.perf_counter() - start
        write_run(outcome, draw=False, posterior=False)
        outcome.timings = dict(timings, total=summary["analysis"]["metrics"]["wall_time"])
        return outcome
    finally:
        torch.set_num_threads(previous_threads)


__all__ = ["Analysis", "Retrained", "RunOutcome", "analyse", "complexity_measures",
           "derive_network", "histogram", "relative_densities", "retrain", "run_search",
           "run_summary"]
