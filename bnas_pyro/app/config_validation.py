"""Validation of a run configuration: a typed reader for trees of dataclasses and the checks of
values and names, every error naming the offending key by its dotted path.

:func:`build_dataclass` reads a mapping into a dataclass by its type hints (nested dataclasses,
``Optional``, ``Literal``, lists and dicts), refusing unknown keys with a "did you mean";
:func:`check_values` checks ranges and that every named data set, space, primitive, mode, guide
and hypergradient exists.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal, Mapping, Union

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


# ------------------------------------------------------------------------------ registries
def available_modes() -> list[str]:
    """Modes of :mod:`bnas_pyro.modes`."""
    return sorted(modes.available_modes())


def available_hypergradients() -> list[str]:
    return list(available_strategies())


def coefficient_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Coefficients)]


def build_dataclass(cls, data: Mapping[str, Any], prefix: str):
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
            kwargs[key] = build_dataclass(hint, value if value is not None else {}, f"{path}.")
        else:
            kwargs[key] = _check_type(value, hint, path)
    return cls(**kwargs)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
#: a number in exponent notation, which YAML 1.1 reads as a string unless it has a dot (``1e-3``)
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _numbers_in(value: Any) -> Any:
    """``value`` with every string in exponent notation (``"1e-3"``, as YAML 1.1 and ``--set``
    read ``1e-3``) turned into the number it writes, in nested mappings and lists too."""
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, Mapping):
        return {k: _numbers_in(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_in(v) for v in value]
    return value


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
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)  # 1e6 written for an integer
        if isinstance(value, float) and value.is_integer():
            value = int(value)
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
        return _numbers_in(dict(value))
    if hint is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {_show(value)}")
        return _numbers_in(list(value))
    raise ConfigError(path, f"cannot check values of type {hint}")  # pragma: no cover


def _positive(config: Any) -> None:
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
        ("analysis.rank_k", config.analysis.rank_k, 0),
        ("analysis.rank_refit_steps", config.analysis.rank_refit_steps, 0),
        ("analysis.rank_draws", config.analysis.rank_draws, 2),
    ]
    if config.analysis.rank_batch_size is not None:
        checks.append(("analysis.rank_batch_size", config.analysis.rank_batch_size, 1))
    if config.threads is not None:
        checks.append(("threads", config.threads, 1))
    if config.search.inner_steps is not None:
        checks.append(("search.inner_steps", config.search.inner_steps, 1))
    if config.data.m is not None:
        checks.append(("data.m", config.data.m, 2))
    if config.analysis.max_rows is not None:
        checks.append(("analysis.max_rows", config.analysis.max_rows, 2))
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
        if not 0.0 < value < 1.0:
            raise ConfigError(key, f"must be in (0, 1), got {value}")
    for key, value in config.search.guide_options.items():
        if key in ("init_scale", "temperature") and value is not None and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
                and math.isfinite(value)):
            raise ConfigError(f"search.guide_options.{key}", f"must be a finite number > 0, got "
                                                              f"{_show(value)}")
    for key, value in (("model.init_log_precision", config.model.init_log_precision),
                       ("search.lr", config.search.lr), ("search.hyper_lr", config.search.hyper_lr)):
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value}")
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


def _check_data_source(data: Any) -> None:
    """``path`` names a data file (``name`` then stays at its default) or the folder of a data
    set that reads one; ``target``, ``task`` and ``categorical`` belong to data files."""
    from bnas_pyro.data import dataset_info
    from bnas_pyro.data_files import is_data_file

    if data.path is not None and is_data_file(data.path):
        default_name = next(f.default for f in dataclasses.fields(data) if f.name == "name")
        if data.name != default_name and not dataset_info(data.name).reads_path:
            raise ConfigError("data.name", f"data.path {data.path!r} is a data file; "
                                           f"data.name {data.name!r} cannot be used with it")
        if data.m is not None:
            raise ConfigError("data.m", "applies to synthetic data sets, not to data files")
        return
    if data.path is not None and not dataset_info(data.name).reads_path:
        raise ConfigError("data.path", f"{data.path!r} is not a data file (.csv, .tsv, .txt, "
                                       f".npz, .npy) and data set {data.name!r} reads no folder")
    for key in ("target", "task"):
        if getattr(data, key) is not None:
            raise ConfigError(f"data.{key}", "applies to a data file given by data.path")
    if data.categorical:
        raise ConfigError("data.categorical", "applies to a CSV / TSV file given by data.path")


def check_values(config: Any) -> None:

    def one_of(key: str, value: str, known: list[str], what: str) -> None:
        if value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(key, f"unknown {what} {value!r}{hint}; available: {', '.join(known)}")

    _positive(config)
    one_of("data.name", config.data.name, available_datasets(), "data set")
    _check_data_source(config.data)
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


__all__ = ["ConfigError", "available_hypergradients", "available_modes", "build_dataclass",
           "check_values", "coefficient_names"]
