"""The build stage of a run: from a :class:`~bnas_pyro.app.config.RunConfig` to the data, the
search space, the Pyro model, the guide, the mode and the step counts of one search.

:func:`build_parts` builds them in a fixed order after seeding torch with ``config.seed``, so the
same configuration draws the same initial weights in any process (the restarts' workers rebuild
their searches with it).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch

from bnas_pyro.coefficients import Coefficients
from bnas_pyro.data import DataFileError, SplitData, load_dataset, load_file
from bnas_pyro.guides import guide_class
from bnas_pyro.models import (BayesianSupernet, CategoricalLikelihood, GaussianWeightPrior,
                              NormalLikelihood)
from bnas_pyro.modes import Mode, get_mode
from bnas_pyro.search_space import SearchSpace, SearchSpaceError
from bnas_pyro.spaces import build_space

from .config import ConfigError, RunConfig


def make_schedule(config: RunConfig):
    """The coefficient schedule of ``search.mode`` (:func:`bnas_pyro.modes.get_mode`)."""
    options = dict(config.search.mode_options)
    options.setdefault("base", Coefficients(**config.search.coefficients))
    try:
        return get_mode(config.search.mode, **options)
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError("search.mode_options", str(err)) from None


def search_strategy(config: RunConfig, schedule) -> str:
    """``search.hypergradient``, or the strategy the mode needs (``joint`` if it names none)."""
    if config.search.hypergradient is not None:
        return config.search.hypergradient
    return getattr(schedule, "hypergradient", None) or "joint"


def build_data(config: RunConfig) -> SplitData:
    """The data set of ``data``, split and standardised, in ``dtype`` on ``device``."""
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{config.device!r} was asked for but CUDA is not available")
    d = config.data
    seed = config.seed if d.seed is None else d.seed
    if d.from_file:
        try:
            return load_file(d.path, d.target, d.task, d.categorical, seed=seed,
                             val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                             standardize=True if d.standardize is None else d.standardize,
                             dtype=dtype, device=device)
        except DataFileError as err:
            raise ConfigError("data.path", str(err)) from None
    return load_dataset(d.name, seed=seed, val_fraction=d.val_fraction,
                        test_fraction=d.test_fraction, standardize=d.standardize, m=d.m,
                        dtype=dtype, device=device, path=d.path)


def build_search_space(config: RunConfig, data: SplitData) -> SearchSpace:
    """The ``space`` of the configuration (a built-in one sized for ``data``, or ``custom``)."""
    try:
        if config.space.custom is not None:
            return SearchSpace.from_dict(config.space.custom)
        return build_space(config.space.name, data, **config.space.options)
    except (SearchSpaceError, TypeError) as err:
        key = "space.custom" if config.space.custom is not None else "space.options"
        raise ConfigError(key, str(err)) from None


def build_model(config: RunConfig, space: SearchSpace, data: SplitData) -> BayesianSupernet:
    """The Pyro model of ``model`` on ``space``, with the likelihood of the task, on the data's
    device and in its dtype."""
    m = config.model
    if data.task == "classification":
        likelihood = CategoricalLikelihood()
    else:
        likelihood = NormalLikelihood(precision=m.noise_precision, learn=m.learn_noise_precision)
    prior = GaussianWeightPrior(scaled=m.weight_prior == "scaled",
                                hyperprior=None if m.hyperprior is None else tuple(m.hyperprior))
    model = BayesianSupernet(space, weight_prior=prior, likelihood=likelihood,
                             precision=m.precision, init_log_precision=m.init_log_precision)
    if m.structure_logits is not None or m.structure_prior == "uniform":
        try:
            model.hyper.fix_structure_prior(m.structure_logits)
        except ValueError as err:
            raise ConfigError("model.structure_logits", str(err)) from None
    return model.to(device=data.x_train.device, dtype=data.x_train.dtype)


def build_guide(config: RunConfig, model, data: SplitData):
    """The guide ``search.guide`` with ``search.guide_options``, seeded by ``seed``."""
    cls = guide_class(config.search.guide)
    options = dict(config.search.guide_options)
    accepts = inspect.signature(cls).parameters
    if "generator" in accepts:
        options["generator"] = torch.Generator().manual_seed(config.seed)
    if "total_steps" in accepts:   # a guide whose schedule is a fraction of the search
        options.setdefault("total_steps", config.search.epochs * steps_per_epoch(config, data))
    if config.model.weight_prior == "scaled" and "couple_to_structure" in accepts:
        options.setdefault("couple_to_structure", True)
    try:
        guide = cls(model, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError("search.guide_options", f"{config.search.guide}: {err}") from None
    return guide.to(device=data.x_train.device, dtype=data.x_train.dtype)


def steps_per_epoch(config: RunConfig, data: SplitData) -> int:
    """Minibatches in one pass over the training split."""
    return max(1, math.ceil(len(data.y_train) / min(config.search.batch_size, len(data.y_train))))


def outer_and_inner_steps(config: RunConfig, data: SplitData) -> tuple[int, int]:
    """(outer_steps, inner_steps): ``epochs`` passes, ``inner_steps`` per outer step."""
    spe = steps_per_epoch(config, data)
    inner = config.search.inner_steps or spe
    return max(1, math.ceil(config.search.epochs * spe / inner)), inner


@dataclass
class SearchParts:
    """What one search is built from (:func:`build_parts`)."""

    config: RunConfig
    data: SplitData
    space: SearchSpace
    model: Any
    guide: Any
    mode: Mode
    outer_steps: int
    inner_steps: int

    @property
    def strategy(self) -> str:
        return search_strategy(self.config, self.mode)


def build_parts(config: RunConfig, data: SplitData | None = None) -> SearchParts:
    """Seed torch with ``config.seed``, then build the data (unless given), space, model, guide
    and mode of one search, in that order (the order fixes the random draws)."""
    torch.manual_seed(config.seed)
    data = build_data(config) if data is None else data
    space = build_search_space(config, data)
    model = build_model(config, space, data)
    guide = build_guide(config, model, data)
    mode = make_schedule(config)
    if isinstance(mode, Mode):
        try:
            mode.check_guide(guide)
        except ValueError as err:
            raise ConfigError("search.guide", f"{err}; set search.guide={mode.guide}") from None
    outer, inner = outer_and_inner_steps(config, data)
    return SearchParts(config, data, space, model, guide, mode, outer, inner)


__all__ = ["SearchParts", "build_data", "build_guide", "build_model", "build_parts",
           "build_search_space", "make_schedule", "outer_and_inner_steps",
           "search_strategy", "steps_per_epoch"]
