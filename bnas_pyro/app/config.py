"""Run configuration of ``bnas-pyro search``: a typed, validated tree read from YAML or JSON.

Every error names the offending key with its full dotted path (``search.epochs``,
``space.options.hidden_primitives[2]``), and is raised at load time, before any data is read or
any model is built: unknown keys (with a "did you mean"), wrong types, unknown data sets, spaces,
primitives, modes, guides and hypergradients.

The defaults are the embedded default search (what ``bnas-pyro search`` with no argument runs):
digits as 64-vectors, the MLP cell space, evidence mode, a mean-field guide and the hypergradient
the mode asks for (``joint`` for evidence mode: single-level ELBO maximisation, exact there),
150 epochs.

Example YAML (every key optional)::

    seed: 0
    device: cpu
    data: {name: wine, val_fraction: 0.2, test_fraction: 0.2}
    space: {name: mlp_cell, options: {hidden: 32, nodes: 2}}
    model: {precision: group}
    search:
      mode: evidence
      coefficients: {c_temp: 1.0}
      guide: mean_field
      guide_options: {init_scale: 0.05}
      hypergradient: joint      # default: the mode's own choice (joint; hoag for grow/prune)
      epochs: 100
    retrain: {epochs: 60}
    analysis: {draws: 200, chains: 2}
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

from bnas_pyro import modes
from bnas_pyro.coefficients import Coefficients
from bnas_pyro.data import available_datasets
from bnas_pyro.guides import available_guides
from bnas_pyro.hypergradients import available_strategies
from bnas_pyro.primitives import available_primitives
from bnas_pyro.spaces import available_spaces


class ConfigError(ValueError):
    """A configuration that cannot be run; ``key`` is the dotted path of the offending entry."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}" if key else f"config: {message}")


# ------------------------------------------------------------------------------ schema
@dataclass
class DataConfig:
    """Which data set and how to split it (see :func:`bnas_pyro.data.load_dataset`).

    ``seed`` seeds the split (default: the run's ``seed``); fix it to compare search seeds on
    one split.
    """

    name: str = "digits"
    seed: Optional[int] = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    standardize: Optional[bool] = None
    m: Optional[int] = None


@dataclass
class SpaceConfig:
    """A built-in space by ``name`` with ``options``, or a ``custom`` SearchSpace dict.

    The default MLP cell offers relu and tanh (no ``linear``) on the input edges: with ``linear``
    there, evidence mode on digits picks the linear model x -linear-> h2 -linear-> y (measured:
    the mixture settles there although a one-hidden-layer relu net fitted alone has a higher
    ELBO), which is a fine Occam answer but not an instructive default.  Put it back with
    ``options: {input_primitives: [relu, tanh, linear]}``.
    """

    name: str = "mlp_cell"
    options: dict = field(default_factory=lambda: {"hidden": 64, "nodes": 2,
                                                   "input_primitives": ["relu", "tanh"]})
    custom: Optional[dict] = None


@dataclass
class ModelConfig:
    """The Pyro model: weight prior, precision level, likelihood noise (regression)."""

    weight_prior: Literal["plain", "scaled"] = "plain"
    precision: Literal["group", "parameter", "shared"] = "group"
    init_log_precision: float = 0.0
    hyperprior: Optional[list] = None
    noise_precision: float = 1.0
    learn_noise_precision: bool = True


@dataclass
class SearchConfig:
    """The bilevel search: mode, coefficients, guide, hypergradient and budget.

    ``mode`` is a mode of :mod:`bnas_pyro.modes` (``evidence``, ``grow``, ``prune``,
    ``enumerate``); ``mode_options`` go to :func:`~bnas_pyro.modes.get_mode` (e.g.
    ``anneal_to: 0.1`` anneals c_temp, ``start``/``end`` for grow/prune, ``num_runs`` for
    enumerate); ``coefficients`` are the mode's base coefficients.  ``hypergradient`` defaults to
    the strategy the mode needs (``null``).  ``epochs`` counts passes over the training split; one
    outer step is ``inner_steps`` inner steps (default: one epoch's worth of minibatches).
    ``restarts`` > 1 runs that many searches from new initialisations (seeds ``seed``,
    ``seed + 1``, ...; the data split stays) and keeps the one with the highest final ELBO
    (:func:`bnas_pyro.search.restarts.run_restarts`, METHOD.md section 3), ``restart_processes`` of them
    at a time.
    """

    mode: str = "evidence"
    mode_options: dict = field(default_factory=dict)
    coefficients: dict = field(default_factory=dict)
    guide: str = "mean_field"
    guide_options: dict = field(default_factory=lambda: {"init_scale": 0.05})
    hypergradient: Optional[str] = None
    hypergradient_options: dict = field(default_factory=dict)
    epochs: int = 150
    inner_steps: Optional[int] = None
    batch_size: int = 128
    lr: float = 0.02
    hyper_lr: float = 0.05
    num_particles: int = 1
    validation: bool = False
    eval_every: int = 1
    checkpoint_every: int = 10
    restarts: int = 1
    restart_processes: int = 1


@dataclass
class RetrainConfig:
    """Retraining of the derived network (a plain ``nn.Module``) on train + validation.

    ``init``: ``scratch`` (default, as DARTS retrains its genotype) starts from a fresh random
    initialisation; ``posterior_mean`` starts from E_q[W] (``SearchResult.derive``).  Measured on
    the default digits search's structure: scratch 0.961-0.972 test accuracy (mean 0.968 over 6
    retraining seeds), posterior mean 0.961-0.964 (3 seeds; a mean-field q shrinks most means
    towards 0, a poor starting point).
    """

    enabled: bool = True
    init: Literal["scratch", "posterior_mean"] = "scratch"
    epochs: int = 60
    lr: float = 0.003
    weight_decay: float = 0.0001
    batch_size: int = 128
    use_validation: bool = True


@dataclass
class AnalysisConfig:
    """Posterior draws for ArviZ and the predictive metrics; ``top_k`` structures in result.json."""

    draws: int = 200
    chains: int = 2
    predictive_draws: int = 100
    top_k: int = 5
    plots: bool = True


@dataclass
class RunConfig:
    """The whole run.

    ``output`` is the folder under which run directories are created; ``threads`` is torch's
    intra-op thread count during the run (1 is fastest for these small networks on a shared
    CPU; ``null`` keeps torch's default); ``device`` is any torch device string (``cpu``,
    ``cuda``, ``cuda:1``, ``mps``): the data, model and guide all follow it.
    """

    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    threads: Optional[int] = 1
    output: str = "runs"
    name: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "RunConfig":
        """A copy with dotted-path changes, e.g. ``replace(**{"search.epochs": 2})`` (validated)."""
        data = self.to_dict()
        for dotted, value in changes.items():
            _set_dotted(data, dotted, value)
        return config_from_dict(data)


def default_config() -> RunConfig:
    """The embedded default search (digits, MLP cell space, evidence mode)."""
    return RunConfig()


# ------------------------------------------------------------------------------ registries
def available_modes() -> list[str]:
    """Modes of :mod:`bnas_pyro.modes`."""
    return sorted(modes.available_modes())


def available_hypergradients() -> list[str]:
    return list(available_strategies())


def coefficient_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Coefficients)]


# ------------------------------------------------------------------------------ reading
def load_config(path: "str | Path | None" = None) -> RunConfig:
    """Read and validate a YAML or JSON file; ``None`` gives the default configuration."""
    if path is None:
        return default_config()
    path = Path(path)
    if not path.exists():
        raise ConfigError("", f"file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - report any parse error with the file name
        raise ConfigError("", f"cannot parse {str(path)!r}: {err}") from None
    if data is None:
        data = {}
    return config_from_dict(data)


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """Validate a plain dict (as read from YAML/JSON) into a :class:`RunConfig`."""
    if not isinstance(data, Mapping):
        raise ConfigError("", f"the top level must be a mapping of keys, got {type(data).__name__}")
    config = _build(RunConfig, data, "")
    _check_names(config)
    return config


def _build(cls, data: Mapping[str, Any], prefix: str):
    if not isinstance(data, Mapping):
        raise ConfigError(prefix.rstrip("."), f"expected a mapping, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(path, f"unknown key{hint} (known keys here: {', '.join(known)})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value if value is not None else {}, f"{path}.")
        else:
            kwargs[key] = _check_type(value, hint, path)
    return cls(**kwargs)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_type(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _check_type(value, a, path)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise ConfigError(path, f"must be one of {', '.join(map(repr, args))}, got {_show(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_show(value)}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a mapping, got {_show(value)}")
        return dict(value)
    if hint is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {_show(value)}")
        return list(value)
    raise ConfigError(path, f"cannot check values of type {hint}")  # pragma: no cover


def _positive(config: RunConfig) -> None:
    checks = [
        ("search.epochs", config.search.epochs, 1), ("search.batch_size", config.search.batch_size, 1),
        ("search.num_particles", config.search.num_particles, 1),
        ("search.eval_every", config.search.eval_every, 1),
        ("search.checkpoint_every", config.search.checkpoint_every, 1),
        ("search.restarts", config.search.restarts, 1),
        ("search.restart_processes", config.search.restart_processes, 1),
        ("retrain.epochs", config.retrain.epochs, 0), ("retrain.batch_size", config.retrain.batch_size, 1),
        ("analysis.draws", config.analysis.draws, 2), ("analysis.chains", config.analysis.chains, 1),
        ("analysis.predictive_draws", config.analysis.predictive_draws, 1),
        ("analysis.top_k", config.analysis.top_k, 1),
    ]
    if config.threads is not None:
        checks.append(("threads", config.threads, 1))
    if config.search.inner_steps is not None:
        checks.append(("search.inner_steps", config.search.inner_steps, 1))
    if config.data.m is not None:
        checks.append(("data.m", config.data.m, 2))
    for key, value, low in checks:
        if value < low:
            raise ConfigError(key, f"must be >= {low}, got {value}")
    for key, value in (("search.lr", config.search.lr), ("search.hyper_lr", config.search.hyper_lr),
                       ("retrain.lr", config.retrain.lr), ("model.noise_precision",
                                                           config.model.noise_precision)):
        if not value > 0:
            raise ConfigError(key, f"must be > 0, got {value}")
    if config.retrain.weight_decay < 0:
        raise ConfigError("retrain.weight_decay", f"must be >= 0, got {config.retrain.weight_decay}")
    if config.analysis.draws < config.analysis.chains:
        raise ConfigError("analysis.draws", f"must be >= analysis.chains ({config.analysis.chains}), "
                                            f"got {config.analysis.draws}")
    for key, value in (("data.val_fraction", config.data.val_fraction),
                       ("data.test_fraction", config.data.test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(key, f"must be in [0, 1), got {value}")
    if config.data.test_fraction <= 0:
        raise ConfigError("data.test_fraction", "must be > 0 (the run reports test metrics)")
    if config.data.val_fraction + config.data.test_fraction >= 1.0:
        raise ConfigError("data.val_fraction", "val_fraction + test_fraction must be < 1")


def _check_primitive_list(value: Any, path: str) -> None:

    known = available_primitives()
    if isinstance(value, (str, Mapping)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(path, f"expected a list of primitives, got {_show(value)}")
    for i, spec in enumerate(value):
        name = spec.get("name") if isinstance(spec, Mapping) else spec
        if not isinstance(name, str):
            raise ConfigError(f"{path}[{i}]", f"a primitive is a name or a mapping with 'name', "
                                              f"got {_show(spec)}")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}[{i}]", f"unknown primitive {name!r}{hint}; registered: "
                                              f"{', '.join(known)}")


def _check_names(config: RunConfig) -> None:

    def one_of(key: str, value: str, known: list[str], what: str) -> None:
        if value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(key, f"unknown {what} {value!r}{hint}; available: {', '.join(known)}")

    _positive(config)
    one_of("data.name", config.data.name, available_datasets(), "data set")
    if config.space.custom is None:
        one_of("space.name", config.space.name, list(available_spaces()), "search space")
        for key, value in config.space.options.items():
            if key.endswith("primitives"):
                _check_primitive_list(value, f"space.options.{key}")
    else:
        custom = config.space.custom
        edges = custom.get("edges")
        if not isinstance(edges, list):
            raise ConfigError("space.custom.edges", f"expected a list of edges, got {_show(edges)}")
        for i, edge in enumerate(edges):
            prims = edge.get("primitives") if isinstance(edge, Mapping) else (
                edge[2] if isinstance(edge, (list, tuple)) and len(edge) == 3 else None)
            if prims is None:
                raise ConfigError(f"space.custom.edges[{i}]", "an edge is {source, target, primitives} "
                                                              f"or [source, target, primitives], got {_show(edge)}")
            _check_primitive_list(prims, f"space.custom.edges[{i}].primitives")
    one_of("search.mode", config.search.mode, available_modes(), "mode")
    one_of("search.guide", config.search.guide, available_guides(), "guide")
    if config.search.hypergradient is not None:
        one_of("search.hypergradient", config.search.hypergradient, available_hypergradients(),
               "hypergradient")
    names = coefficient_names()
    for key, value in config.search.coefficients.items():
        path = f"search.coefficients.{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean 'search.coefficients.{close[0]}'?" if close else ""
            raise ConfigError(path, f"unknown coefficient{hint} (known: {', '.join(names)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {_show(value)}")
    try:
    
        Coefficients(**config.search.coefficients)
    except (TypeError, ValueError) as err:
        raise ConfigError("search.coefficients", str(err)) from None
    if config.model.hyperprior is not None:
        hp = config.model.hyperprior
        if len(hp) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                   for v in hp):
            raise ConfigError("model.hyperprior", f"expected [lambda_1, lambda_2] > 0, got {hp!r}")
    try:
        import torch

        torch.device(config.device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError("device", f"not a torch device: {config.device!r} ({err})") from None


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise ConfigError(dotted, f"'{p}' is not a section")
        node = node[p]
    node[parts[-1]] = value


def dump_config(config: RunConfig, path: "str | Path") -> Path:
    """Write the configuration as YAML (the run directory's ``config.yaml``)."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path


__all__ = ["AnalysisConfig", "ConfigError", "DataConfig", "ModelConfig", "RetrainConfig",
           "RunConfig", "SearchConfig", "SpaceConfig",
           "available_hypergradients", "available_modes", "config_from_dict", "default_config",
           "dump_config", "load_config"]
