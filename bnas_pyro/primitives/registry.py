"""The primitive functions g^{j,k}_l an edge can carry, and their one registry (METHOD.md section 1).

A primitive here is *functional*: it declares the shapes of its parameters and computes
``g(x; w)`` from parameters handed to it.  The supernet keeps every parameter of every
(edge, primitive) pair in one flat vector, which is what lets the Pyro model put a single
vectorised sample site on all weights.

Users add primitives by name with :func:`register_primitive`; the factory may return a
:class:`Primitive` or any ``torch.nn.Module`` (it is then run with
:func:`torch.func.functional_call`, its parameters supplied from the flat vector, see
:class:`ModulePrimitive`).  The built-in primitives live beside this module
(:mod:`~bnas_pyro.primitives.dense`, :mod:`~bnas_pyro.primitives.conv`,
:mod:`~bnas_pyro.primitives.subset`) and are registered when :mod:`bnas_pyro.primitives` is
imported.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from bnas_pyro.registry import Registry


class Primitive:
    """A function ``g(x; w)`` from ``in_features`` to ``out_features`` with named parameters.

    Subclasses set :attr:`parameter_shapes` and implement :meth:`forward`.  ``init_std``
    gives a sensible scale for initialising variational means (Glorot-like for linear maps).
    """

    #: True for primitives with no output (the "zero" operation), so the supernet can skip them.
    is_zero: bool = False
    #: True for parameter-free primitives that pass their input through (skip connections).
    is_identity: bool = False

    def __init__(self, in_features: int, out_features: int):
        self.in_features = int(in_features)
        self.out_features = int(out_features)

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def init_std(self, name: str) -> float:
        return 1.0 / math.sqrt(max(self.in_features, 1))

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return self.forward(x, params)

    def to_module(self, params: Mapping[str, Tensor]) -> nn.Module:
        """A plain ``nn.Module`` computing this primitive with ``params`` as trainable values."""
        return _FrozenPrimitiveModule(self, params)


class _FrozenPrimitiveModule(nn.Module):
    def __init__(self, primitive: Primitive, params: Mapping[str, Tensor]):
        super().__init__()
        self.primitive = primitive
        self.names = list(params)
        for name, value in params.items():
            self.register_parameter(name, nn.Parameter(value.detach().clone()))

    def forward(self, x: Tensor) -> Tensor:
        return self.primitive(x, {n: getattr(self, n) for n in self.names})


class ModulePrimitive(Primitive):
    """Adapts any ``nn.Module`` to a functional primitive via ``torch.func.functional_call``."""

    def __init__(self, module: nn.Module, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.module = module
        self._shapes = {n: tuple(p.shape) for n, p in module.named_parameters()}
        self._init = {n: float(p.detach().std()) if p.numel() > 1 else 0.1
                      for n, p in module.named_parameters()}

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def init_std(self, name: str) -> float:
        return self._init[name] or 0.1

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return torch.func.functional_call(self.module, dict(params), (x,))

    def to_module(self, params: Mapping[str, Tensor]) -> nn.Module:
        """A copy of the wrapped module holding ``params`` (its parameter names, dotted ones
        included, are those of the module), in the dtype and on the device of ``params``."""
        missing = sorted(set(self._shapes) - set(params))
        extra = sorted(set(params) - set(self._shapes))
        if missing or extra:
            raise KeyError(f"parameters of the wrapped {type(self.module).__name__}: missing "
                           f"{missing}, unexpected {extra}")
        module = copy.deepcopy(self.module)
        first = next(iter(params.values()), None)
        if first is not None:   # hold the values in their own dtype and device (no rounding)
            module = module.to(device=first.device, dtype=first.dtype)
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(params[name].reshape(p.shape))
        return module


PrimitiveFactory = Callable[..., "Primitive | nn.Module"]

#: every primitive by name
PRIMITIVES: Registry[PrimitiveFactory] = Registry("primitive")


def register_primitive(name: str, factory: PrimitiveFactory, *, overwrite: bool = False) -> None:
    """Register ``factory(in_features, out_features, **options)`` under ``name``.

    The factory returns a :class:`Primitive` or an ``nn.Module`` mapping ``(..., in_features)``
    to ``(..., out_features)``.
    """
    PRIMITIVES.register(name, factory, overwrite=overwrite)


def available_primitives() -> list[str]:
    return PRIMITIVES.names()


def build_primitive(name: str, in_features: int, out_features: int, **options) -> Primitive:
    """Instantiate the registered primitive ``name``; unknown names raise ``KeyError``
    (:class:`~bnas_pyro.registry.UnknownNameError`)."""
    factory = PRIMITIVES.get(name)
    made = factory(in_features, out_features, **options)
    if isinstance(made, Primitive):
        return made
    if isinstance(made, nn.Module):
        return ModulePrimitive(made, in_features, out_features)
    raise TypeError(f"factory of primitive {name!r} returned {type(made).__name__}, "
                    "expected a Primitive or an nn.Module")
