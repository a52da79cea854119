"""One structure search from a :class:`~bnas_pyro.config.RunConfig` to a filled run directory.

:func:`run_search` is what ``bnas-pyro search`` and ``make demo`` run:

1. load and split the data set (:mod:`bnas_pyro.data`), build the space (:mod:`bnas_pyro.spaces`),
   the Pyro model and the guide;
2. run :class:`~bnas_pyro.bilevel.BilevelSearch` with the mode's coefficient schedule, a progress
   bar showing the ELBO, the validation metric and the temperature, and checkpoints in the run
   directory;
3. evaluate: the supernet's posterior predictive on the test split, the ELBO, C_param and C_struct,
   the relative densities rho, PSIS-LOO; ArviZ InferenceData to ``posterior.nc``;
4. derive the chosen structure as a plain network, retrain it on train (+ validation) and score
   it on the test split;
5. write ``result.json`` and the plots (:mod:`bnas_pyro.run_directory`).

The pieces of other modules (schedules, complexity, top-k, export) are called through the small
functions at the top of this file.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .baselines import collapse_statistics, residual_std, train_network
from .coefficients import Coefficients
from .complexity import parametric_complexity, relative_density, structural_complexity
from .config import ConfigError, RunConfig, guide_class
from .export import build_network
from .data import SplitData, load_dataset
from .metrics import evaluate_bayesian, evaluate_network, posterior_predictive
from .objectives import estimate_elbo, trace_terms
from .search_space import SearchSpace, SearchSpaceError
from .schedules import get_mode
from .spaces import build_space

# ------------------------------------------------------------------------------ adapters
def make_schedule(config: RunConfig):
    """The coefficient schedule of ``search.mode`` (:func:`bnas_pyro.schedules.get_mode`)."""
    options = dict(config.search.mode_options)
    options.setdefault("base", Coefficients(**config.search.coefficients))
    try:
        return get_mode(config.search.mode, **options)
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError("search.mode_options", str(err)) from None


def complexity_measures(model, guide) -> dict[str, Any]:
    """C_param and C_struct (METHOD.md section 4, :mod:`bnas_pyro.complexity`)."""
    return {"c_param": float(parametric_complexity(model, guide)),
            "c_struct": float(structural_complexity(model, guide))}


def relative_densities(model, guide) -> Tensor:
    """rho = exp(-mu^2 / (2 sigma^2)) of every weight (:func:`bnas_pyro.complexity.relative_density`)."""
    return torch.as_tensor(relative_density(model, guide)).detach().flatten()


def top_structures(result, k: int) -> list[dict[str, Any]]:
    """The k most probable structures under q, best first (:meth:`SearchResult.top_structures`)."""
    return [{"structure": dict(r.structure), "probability": float(r.probability)}
            for r in result.top_structures(k)]


def derive_network(result, space: SearchSpace, structure: dict[str, str], seed: int,
                   init: str = "scratch") -> tuple[nn.Module, str]:
    """The chosen structure as a plain module.

    ``init="posterior_mean"``: ``result.derive(structure)`` (E_q[W], :mod:`bnas_pyro.export`);
    ``"scratch"``: the same network class with weights drawn afresh, N(0, init_std) per primitive
    as the guides' initial means, seeded by ``seed`` (:func:`bnas_pyro.export.build_network`; a
    the same draw as the guides' initial means).
    """
    if init == "posterior_mean":
        return result.derive(structure), "posterior_mean"
    gen = torch.Generator().manual_seed(seed)
    std = result.model.layout.init_std
    weights = (torch.randn(std.shape, generator=gen) * std).to(result.model.hyper.log_precision)
    return build_network(space, dict(structure), weights, {"structure": dict(structure),
                                                           "init": "scratch", "seed": seed}), "scratch"


# ------------------------------------------------------------------------------ building
def build_data(config: RunConfig) -> SplitData:
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{config.device!r} was asked for but CUDA is not available")
    d = config.data
    return load_dataset(d.name, seed=config.seed if d.seed is None else d.seed,
                        val_fraction=d.val_fraction,
                        test_fraction=d.test_fraction, standardize=d.standardize, m=d.m,
                        dtype=dtype, device=device)


def build_search_space(config: RunConfig, data: SplitData) -> SearchSpace:
    try:
        if config.space.custom is not None:
            return SearchSpace.from_dict(config.space.custom)
        return build_space(config.space.name, data, **config.space.options)
    except (SearchSpaceError, TypeError) as err:
        key = "space.custom" if config.space.custom is not None else "space.options"
        raise ConfigError(key, str(err)) from None


def build_model(config: RunConfig, space: SearchSpace, data: SplitData):
    from .models import BayesianSupernet, CategoricalLikelihood, GaussianWeightPrior, NormalLikelihood

    m = config.model
    if data.task == "classification":
        likelihood = CategoricalLikelihood()
    else:
        likelihood = NormalLikelihood(precision=m.noise_precision, learn=m.learn_noise_precision)
    prior = GaussianWeightPrior(scaled=m.weight_prior == "scaled",
                                hyperprior=None if m.hyperprior is None else tuple(m.hyperprior))
    model = BayesianSupernet(space, weight_prior=prior, likelihood=likelihood,
                             precision=m.precision, init_log_precision=m.init_log_precision)
    return model.to(device=data.x_train.device, dtype=data.x_train.dtype)


def build_guide(config: RunConfig, model, data: SplitData):
    cls = guide_class(config.search.guide)
    options = dict(config.search.guide_options)
    if "generator" in inspect.signature(cls).parameters:
        options["generator"] = torch.Generator().manual_seed(config.seed)
    if config.model.weight_prior == "scaled" and "couple_to_structure" in inspect.signature(cls).parameters:
        options.setdefault("couple_to_structure", True)
    try:
        guide = cls(model, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError("search.guide_options", f"{config.search.guide}: {err}") from None
    return guide.to(device=data.x_train.device, dtype=data.x_train.dtype)


def steps_per_epoch(config: RunConfig, data: SplitData) -> int:
    return max(1, math.ceil(len(data.y_train) / min(config.search.batch_size, len(data.y_train))))


def outer_and_inner_steps(config: RunConfig, data: SplitData) -> tuple[int, int]:
    """(outer_steps, inner_steps): ``epochs`` passes, ``inner_steps`` per outer step."""
    spe = steps_per_epoch(config, data)
    inner = config.search.inner_steps or spe
    return max(1, math.ceil(config.search.epochs * spe / inner)), inner


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
            elbo = float(trace_terms(search.model, search.guide, x, y, len(d.y_train)).elbo)
            pred = posterior_predictive(search.model, search.guide, d.x_val, None, self.draws)
        if d.task == "classification":
            value = float((pred.probs.argmax(-1) == d.y_val).double().mean())
        else:
            value = float((pred.mean - d.y_val).pow(2).mean().sqrt()) * d.y_std
        self.last = {"elbo": elbo, self.metric: value}
        return dict(self.last)


def _make_search(config: RunConfig, model, guide, schedule, strategy: str, inner: int, outer: int,
                 directory: Path | None, progress: bool, callbacks):
    from .bilevel import BilevelSearch

    try:
        return BilevelSearch(
            model, guide, schedule, strategy, inner_steps=inner, outer_steps=outer,
            lr=config.search.lr, hyper_lr=config.search.hyper_lr,
            batch_size=config.search.batch_size, num_particles=config.search.num_particles,
            validation=config.search.validation, seed=config.seed, checkpoint_dir=directory,
            checkpoint_every=config.search.checkpoint_every, progress=progress,
            callbacks=callbacks, hypergradient_options=config.search.hypergradient_options)
    except (TypeError, ValueError) as err:
        raise ConfigError("search", str(err)) from None


def build_parts(config: RunConfig):
    """Seed torch with ``config.seed``, then build ``(data, space, model, guide, schedule,
    outer_steps, inner_steps)`` of one search, in that order (the order fixes the random draws)."""
    torch.manual_seed(config.seed)
    data = build_data(config)
    space = build_search_space(config, data)
    model = build_model(config, space, data)
    guide = build_guide(config, model, data)
    schedule = make_schedule(config)
    outer, inner = outer_and_inner_steps(config, data)
    return data, space, model, guide, schedule, outer, inner


def restart_search(config: RunConfig, split_seed: int, progress: bool, seed: int):
    """``build(seed)`` of :func:`bnas_pyro.restarts.run_restarts`: a fresh model, guide and search
    with initialisation seed ``seed`` on the run's split (module level: picklable for processes)."""
    run_config = config.replace(seed=seed, **{"data.seed": split_seed})
    data, _, model, guide, schedule, outer, inner = build_parts(run_config)
    callbacks = [ProgressCallback(data, config.search.eval_every)]
    return _make_search(run_config, model, guide, schedule, search_strategy(run_config, schedule),
                        inner, outer, None, progress, callbacks)


def _restarts(config: RunConfig, data: SplitData, directory: Path, progress: bool, callback):
    """``search.restarts`` searches; the one with the highest final ELBO is the result."""
    import functools

    from .checkpoint import save_checkpoint
    from .restarts import run_restarts

    split_seed = config.seed if config.data.seed is None else config.data.seed
    processes = config.search.restart_processes
    build = functools.partial(restart_search, config, split_seed, progress and processes == 1)
    report = run_restarts(build, data.x_train, data.y_train, config.search.restarts,
                          seed=config.seed, processes=processes, x_val=data.x_val, y_val=data.y_val,
                          elbo_particles=50, num_threads=config.threads)
    best = report.best
    for record in best.history:  # the progress callback's last values, for the summary
        callback.last = {k: v for k, v in record.extra.items()}
    save_checkpoint(directory, {"step": len(best.history), "restart": report.best_index,
                                "guide": best.guide.state_dict(),
                                "hyper": best.model.hyper.state_dict(),
                                "history": [r.to_dict() for r in best.history]})
    return best, report.to_dict()


def search_strategy(config: RunConfig, schedule) -> str:
    """``search.hypergradient``, or the strategy the mode needs (``joint`` if it names none)."""
    if config.search.hypergradient is not None:
        return config.search.hypergradient
    return getattr(schedule, "hypergradient", None) or "joint"


def _is_enumeration(schedule) -> bool:
    return callable(getattr(schedule, "run", None)) and getattr(schedule, "name", "") == "enumerate"


def _enumerate(config: RunConfig, mode, strategy: str, data: SplitData, space: SearchSpace,
               inner: int, outer: int, directory: Path, progress: bool, callback):
    """The ``enumerate`` mode: runs f_1..f_N; the run with the highest ELBO is the result."""
    from .checkpoint import save_checkpoint

    if mode.num_runs is None and space.num_structures > 20:
        raise ConfigError("search.mode_options.num_runs",
                          f"enumerate visits all {space.num_structures} structures by default: "
                          "give num_runs")
    if config.search.validation:
        raise ConfigError("search.validation", "the enumerate mode does not take a validation split")
    if config.search.restarts > 1:
        raise ConfigError("search.restarts", "the enumerate mode runs its own sequence of searches; "
                                             "set restarts to 1")

    def factory(i: int):
        run_config = config.replace(seed=config.seed + i)
        torch.manual_seed(config.seed + i)
        model = build_model(run_config, space, data)
        return model, build_guide(run_config, model, data)

    try:
        runs = mode.run(factory, data.x_train, data.y_train, seed=config.seed, keep_results=True,
                        inner_steps=inner, outer_steps=outer, lr=config.search.lr,
                        hyper_lr=config.search.hyper_lr, batch_size=config.search.batch_size,
                        num_particles=config.search.num_particles, progress=progress,
                        callbacks=[callback], hypergradient=strategy,
                        hypergradient_options=config.search.hypergradient_options)
    except (TypeError, ValueError) as err:
        raise ConfigError("search", str(err)) from None
    elbos = [estimate_elbo(r.model, r.guide, data.x_train, data.y_train, num_particles=10)[0]
             for r in runs.results]
    best = max(range(len(elbos)), key=elbos.__getitem__)
    chosen = runs.results[best]
    save_checkpoint(directory, {"step": len(chosen.history), "run": best,
                                "guide": chosen.guide.state_dict(),
                                "hyper": chosen.model.hyper.state_dict(),
                                "history": [r.to_dict() for r in chosen.history]})
    info = {"structures": runs.structures, "probabilities": runs.probabilities, "elbos": elbos,
            "num_distinct": runs.num_distinct, "chosen_run": best}
    return chosen, info


# ------------------------------------------------------------------------------ the run
@dataclass
class RunOutcome:
    """Everything a run produced (the run directory holds the same, on disk)."""

    run_dir: Path
    config: RunConfig
    data: SplitData
    result: Any
    summary: dict[str, Any]
    network: nn.Module | None = None
    idata: Any = None
    timings: dict[str, float] = field(default_factory=dict)


def run_search(config: RunConfig, run_dir: "str | Path | None" = None, progress: bool = True,
               log: Callable[[str], None] = print) -> RunOutcome:
    """Run the search described by ``config`` and fill a run directory (returned in the outcome)."""
    from . import posterior as post
    from .run_directory import new_run_dir, write_run

    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        data, space, model, guide, schedule, outer, inner = build_parts(config)
        directory = new_run_dir(config) if run_dir is None else Path(run_dir)
        directory.mkdir(parents=True, exist_ok=True)
        log(f"data: {data.summary()}")
        log(f"space: {space.num_structures} structures, {model.layout.num_parameters} weights; "
            f"run directory: {directory}")
        callback = ProgressCallback(data, config.search.eval_every)
        strategy = search_strategy(config, schedule)
        t0 = time.perf_counter()
        enumeration = restarts = None
        if _is_enumeration(schedule):
            result, enumeration = _enumerate(config, schedule, strategy, data, space, inner, outer,
                                             directory, progress, callback)
            model, guide = result.model, result.guide
        elif config.search.restarts > 1:
            result, restarts = _restarts(config, data, directory, progress, callback)
            model, guide = result.model, result.guide
        else:
            search = _make_search(config, model, guide, schedule, strategy, inner, outer, directory,
                                  progress, [callback])
            result = search.run(data.x_train, data.y_train, data.x_val, data.y_val)
        search_time = time.perf_counter() - t0

        # ---- analysis of q
        t1 = time.perf_counter()
        a = config.analysis
        task = data.task
        supernet_test = evaluate_bayesian(model, guide, data.x_test, data.y_test, task,
                                          num_draws=a.predictive_draws, y_std=data.y_std)
        elbo, elbo_se = estimate_elbo(model, guide, data.x_train, data.y_train,
                                      num_particles=min(50, a.predictive_draws))
        complexity = complexity_measures(model, guide)
        rho = relative_densities(model, guide)
        idata = post.to_inference_data(result, x=data.x_train, y=data.y_train, num_draws=a.draws,
                                       num_chains=a.chains, seed=config.seed)
        loo = post.loo(idata, pointwise=True)
        analysis_time = time.perf_counter() - t1

        # ---- the derived network, retrained
        structure = result.structure
        network, init = None, None
        derived_test: dict[str, float] = {}
        t2 = time.perf_counter()
        if config.retrain.enabled:
            network, init = derive_network(result, space, structure, config.seed,
                                           config.retrain.init)
            network = network.to(device=data.x_train.device, dtype=data.x_train.dtype)
            r = config.retrain
            x_fit, y_fit = data.x_train, data.y_train
            if r.use_validation:
                x_fit, y_fit = torch.cat([x_fit, data.x_val]), torch.cat([y_fit, data.y_val])
            train_network(network, x_fit, y_fit, task, epochs=r.epochs, batch_size=r.batch_size,
                          lr=r.lr, weight_decay=r.weight_decay, seed=config.seed)
            noise = residual_std(network, x_fit, y_fit) if task == "regression" else None
            derived_test = evaluate_network(network, data.x_test, data.y_test, task,
                                            noise_std=noise, y_std=data.y_std)
        retrain_time = time.perf_counter() - t2

        headline = derived_test if derived_test else supernet_test
        metrics: dict[str, Any] = {f"test_{k}": v for k, v in headline.items()}
        metrics.update({f"supernet_test_{k}": v for k, v in supernet_test.items()})
        metrics.update({"elbo": elbo, "elbo_se": elbo_se,
                        "elpd_loo": float(loo.elpd_loo), "elpd_loo_se": float(loo.se),
                        "c_param": complexity["c_param"], "c_struct": complexity["c_struct"],
                        "wall_time": time.perf_counter() - start, "search_wall_time": search_time})
        summary = {
            "data": {"name": data.name, "task": task, "sizes": data.sizes,
                     "input_shape": list(data.input_shape), "n_classes": data.n_classes},
            "space": space.to_dict(),
            "num_structures": space.num_structures,
            "structure": structure,
            "structure_probability": result.structure_probability,
            "edge_probabilities": result.edge_probabilities(),
            "top_k": top_structures(result, a.top_k),
            "metrics": metrics,
            "metrics_source": "derived network, retrained" if derived_test else "supernet under q",
            "derived": {"init": init, "retrain_epochs": config.retrain.epochs if network else 0},
            "collapse": collapse_statistics(space, structure),
            "history": [r_.to_dict() for r_ in result.history],
            "rho_histogram": _histogram(rho),
            "loo": {"elpd_loo": float(loo.elpd_loo), "se": float(loo.se), "p_loo": float(loo.p_loo),
                    "pareto_k_max": float(loo.pareto_k.max()),
                    "pareto_k_over_0.7": int((loo.pareto_k > 0.7).sum())},
            "timings": {"search": search_time, "analysis": analysis_time, "retrain": retrain_time},
            "validation_metric": callback.metric,
            "mode": config.search.mode,
            "strategy": result.info.get("strategy", strategy),
        }
        if enumeration is not None:
            summary["enumeration"] = enumeration
        if restarts is not None:
            summary["restarts"] = restarts
        outcome = RunOutcome(directory, config, data, result, summary, network, idata)
        write_run(outcome)
        summary["metrics"]["wall_time"] = time.perf_counter() - start
        write_run(outcome, draw=False, posterior=False)
        outcome.timings = dict(summary["timings"], total=summary["metrics"]["wall_time"])
        return outcome
    finally:
        torch.set_num_threads(previous_threads)


def _histogram(values: Tensor | None, bins: int = 50) -> dict[str, Any] | None:
    if values is None:
        return None
    v = values.double().clamp(0, 1).cpu()
    counts = torch.histc(v, bins=bins, min=0.0, max=1.0)
    return {"bin_edges": torch.linspace(0, 1, bins + 1).tolist(), "counts": counts.tolist(),
            "num_weights": int(v.numel()), "fraction_over_0.5": float((v > 0.5).double().mean()),
            "mean": float(v.mean())}


__all__ = ["ProgressCallback", "RunOutcome", "build_data", "build_guide", "build_model",
           "build_search_space", "complexity_measures", "derive_network", "make_schedule",
           "outer_and_inner_steps", "relative_densities", "run_search", "search_strategy",
           "top_structures"]


def _devices(x: Tensor) -> list:
    """The CUDA devices whose generator a fork must save (none for CPU data)."""
    return [x.device] if x.device.type == "cuda" else []
