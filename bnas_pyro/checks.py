"""Checks of what goes into a fit, a search, an analysis or a derived network, in one place.

Every entry point (:meth:`BilevelSearch.prepare <bnas_pyro.search.bilevel.BilevelSearch.prepare>`,
:meth:`InnerLoop.run <bnas_pyro.inference.InnerLoop.run>` and so :func:`bnas_pyro.fit`,
:func:`~bnas_pyro.analysis.arviz_data.to_inference_data` and so
:func:`~bnas_pyro.analysis.comparison.compare`, the posterior-predictive metrics, a derived
network's input) calls :func:`check_data` or :func:`check_network_input` before any arithmetic,
so a wrong input fails with a message that names it and says what to convert, instead of deep in
a matrix product:

- the data: tensors, at least one row, x and y with as many rows, floating-point x;
- dtype and device: x (and real-valued y) in the dtype and on the device of the model's
  parameters, the guide's parameters in the model's (a guide built before ``model.double()``);
- the model's own checks (``model.check_data``: the input shape, non-finite values, labels).

Errors are ``TypeError`` for a wrong type or dtype and ``ValueError`` for a wrong size, device or
value.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import Tensor

_CONVERT = {torch.float32: ".float()", torch.float64: ".double()", torch.float16: ".half()",
            torch.bfloat16: ".bfloat16()"}


def _convert(dtype: torch.dtype) -> str:
    return _CONVERT.get(dtype, f".to({dtype})")


def reference_tensor(module: Any) -> Tensor | None:
    """The first floating-point parameter (else buffer) of ``module``: its dtype and device are the
    module's (``None`` for a module without any, e.g. an autoguide before its first call)."""
    for getter in ("parameters", "buffers"):
        items: Iterable[Tensor] = getattr(module, getter, lambda: ())()
        for t in items:
            if t.is_floating_point():
                return t
    return None


def check_positive(name: str, value: Any, allow_zero: bool = False) -> None:
    """``value`` is a finite number > 0 (>= 0 with ``allow_zero``), else ``ValueError`` naming
    ``name``; a tensor is checked elementwise."""
    if torch.is_tensor(value):
        ok = bool(torch.isfinite(value).all()) and bool((value >= 0 if allow_zero else value > 0).all())
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    else:
        ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got "
                         f"{value.tolist() if torch.is_tensor(value) else value}")


def _check_tensor(name: str, t: Any) -> Tensor:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() == 0:
        raise ValueError(f"{name} is a scalar; it must have one row per data point")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows, shape {tuple(t.shape)}): there is no data to "
                         "fit or evaluate")
    return t


def _same_dtype_device(name: str, t: Tensor, ref: Tensor, owner: str) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {owner} computes in {ref.dtype}: convert "
                        f"{name} with {name}{_convert(ref.dtype)} (or the {owner} with "
                        f"{owner}.to({t.dtype}))")
    if t.device != ref.device:
        raise ValueError(f"{name} is on device {t.device} but {owner} is on {ref.device}: move "
                         f"{name} with {name}.to({str(ref.device)!r}) (or the {owner} with "
                         f"{owner}.to({str(t.device)!r}))")


def check_model_guide(model: Any, guide: Any = None) -> Tensor | None:
    """The guide's parameters in the dtype and on the device of the model's; returns the model's
    reference tensor (``None`` if it has no floating-point parameter)."""
    ref = reference_tensor(model)
    if guide is None or ref is None:
        return ref
    g = reference_tensor(guide)
    if g is None:  # a lazy autoguide: its parameters follow the data at its first call
        return ref
    if g.dtype != ref.dtype:
        raise TypeError(f"the guide's parameters have dtype {g.dtype} but the model's have "
                        f"{ref.dtype} (was the guide built before the model was converted?): "
                        f"convert the guide with guide{_convert(ref.dtype)}, or build it after "
                        "converting the model")
    if g.device != ref.device:
        raise ValueError(f"the guide's parameters are on device {g.device} but the model's are on "
                         f"{ref.device}: move the guide with guide.to({str(ref.device)!r})")
    return ref


def check_data(x: Any, y: Any = None, model: Any = None, guide: Any = None,
               names: tuple[str, str] = ("x", "y")) -> None:
    """Refuse data that ``model`` (and ``guide``) cannot take, naming what to convert.

    ``names`` are the names the messages give x and y (e.g. ``("x_val", "y_val")``).  After the
    checks here (tensors, rows, dtype, device, the guide against the model), the model's own
    ``check_data(x, y)`` runs, if it has one (input shape, non-finite values, label range).
    """
    xn, yn = names
    x = _check_tensor(xn, x)
    if not x.is_floating_point():
        ref = reference_tensor(model) if model is not None else None
        want = ref.dtype if ref is not None else torch.get_default_dtype()
        raise TypeError(f"{xn} has dtype {x.dtype}; the inputs must be floating point: convert "
                        f"{xn} with {xn}{_convert(want)}")
    if y is not None:
        y = _check_tensor(yn, y)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{xn} has {x.shape[0]} rows but {yn} has {y.shape[0]}")
    if model is None:
        return
    ref = check_model_guide(model, guide)
    if ref is not None:
        _same_dtype_device(xn, x, ref, "model")
        if y is not None and y.is_floating_point():
            _same_dtype_device(yn, y, ref, "model")
        elif y is not None and y.device != ref.device:
            raise ValueError(f"{yn} is on device {y.device} but the model is on {ref.device}: move "
                             f"{yn} with {yn}.to({str(ref.device)!r})")
    own = getattr(model, "check_data", None)
    if own is not None:
        own(x, y)


def check_network_input(network: Any, x: Any, input_shape: "tuple[int, ...] | None" = None,
                        name: str = "x") -> None:
    """An input a plain network (e.g. a derived network) can take: a non-empty floating-point
    tensor in the network's dtype and on its device, with feature shape ``input_shape`` (default:
    ``network.nodes[network.input]`` when the network has them)."""
    x = _check_tensor(name, x)
    ref = reference_tensor(network)
    if not x.is_floating_point():
        want = ref.dtype if ref is not None else torch.get_default_dtype()
        raise TypeError(f"{name} has dtype {x.dtype}; the inputs must be floating point: convert "
                        f"{name} with {name}{_convert(want)}")
    if ref is not None:
        _same_dtype_device(name, x, ref, "network")
    if input_shape is None:
        nodes, node = getattr(network, "nodes", None), getattr(network, "input", None)
        if isinstance(nodes, dict) and node in nodes:
            size = nodes[node]
            input_shape = tuple(size) if isinstance(size, (list, tuple)) else (int(size),)
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)}; the network's input expects "
                         f"(batch, {', '.join(map(str, input_shape))})")


__all__ = ["check_data", "check_model_guide", "check_network_input", "check_positive",
           "reference_tensor"]
