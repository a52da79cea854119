"""The dense primitives for vector nodes (METHOD.md section 1): affine maps with an activation,
identity, zero, a constant, and polynomials of one input in the monomial or the Legendre basis.

    linear:    g(x; W, b) = x W + b          tanh / relu:  act(x W + b)
    identity:  g(x) = x                      zero:         g(x) = 0
    constant:  g(x; b) = b                   poly(degree=d):  b + sum_{i=1..d} (x ** i) W_i
    legendre(degree=d, low, high):  b + sum_{k=1..d} sqrt(2k + 1) P_k(u) W_k, with
                                    u = (2x - low - high) / (high - low)

Importing :mod:`bnas_pyro.primitives` registers these names.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import Tensor

from .registry import Primitive, register_primitive


class Affine(Primitive):
    """``act(x W + b)``; ``act`` is the identity for the plain linear primitive."""

    activation: Callable[[Tensor], Tensor] | None = None

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features)
        self.bias = bias

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": (self.in_features, self.out_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        out = x @ params["weight"]
        if self.bias:
            out = out + params["bias"]
        return out if self.activation is None else self.activation(out)


class Linear(Affine):
    """``x W + b``."""


class TanhLinear(Affine):
    """``tanh(x W + b)``."""

    activation = staticmethod(torch.tanh)


class ReluLinear(Affine):
    """``relu(x W + b)``."""

    activation = staticmethod(torch.relu)

    def init_std(self, name: str) -> float:
        return math.sqrt(2.0 / max(self.in_features, 1))


class Identity(Primitive):
    """The skip connection ``g(x) = x``; only valid where input and output sizes match."""

    is_identity = True

    def __init__(self, in_features: int, out_features: int):
        if in_features != out_features:
            raise ValueError(
                f"identity needs equal sizes, got in_features={in_features}, "
                f"out_features={out_features}"
            )
        super().__init__(in_features, out_features)

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return x


class Zero(Primitive):
    """``g(x) = 0`` (the "no edge" choice)."""

    is_zero = True

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return x.new_zeros(x.shape[:-1] + (self.out_features,))


class Constant(Primitive):
    """``g(x) = b``, a learned constant vector independent of the input."""

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"bias": (self.out_features,)}

    def init_std(self, name: str) -> float:
        return 1.0

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return params["bias"].expand(x.shape[:-1] + (self.out_features,))


class Polynomial(Primitive):
    """Polynomial features of degree ``d``: ``b + sum_{i=1..d} (x ** i) W_i``.

    Each input coordinate is raised elementwise to the powers 1..d and mapped linearly, so
    degree 0 is the constant ``b`` and degree 1 the linear map.  On a scalar input this is the
    polynomial ``w_0 + w_1 x + ... + w_d x^d`` of the source talk's degree example.
    """

    #: the registry name, for error messages
    kind = "poly"

    def __init__(self, in_features: int, out_features: int, degree: int = 2):
        try:
            valid = not isinstance(degree, bool) and int(degree) == degree and degree >= 0
        except (TypeError, ValueError, OverflowError):
            valid = False
        if not valid:
            raise ValueError(f"{self.kind} degree must be a non-negative integer, got {degree!r}")
        super().__init__(in_features, out_features)
        self.degree = int(degree)

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"bias": (self.out_features,)}
        if self.degree > 0:
            shapes["weight"] = (self.degree * self.in_features, self.out_features)
        return shapes

    def features(self, x: Tensor) -> Tensor:
        """The non-constant features, power-major: ``[x, x^2, ..., x^d]`` (``(..., d * in)``)."""
        if self.degree == 0:
            return x.new_zeros(x.shape[:-1] + (0,))
        return torch.cat([x**i for i in range(1, self.degree + 1)], dim=-1)

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        out = params["bias"].expand(x.shape[:-1] + (self.out_features,))
        if self.degree > 0:
            out = out + self.features(x) @ params["weight"]
        return out


class Legendre(Polynomial):
    """Polynomial of degree ``d`` in the orthonormal Legendre basis of ``[low, high]`` (a primitive
    of METHOD.md section 1, for the source talk's degree example of section 6):
    ``b + sum_{k=1..d} sqrt(2k + 1) P_k(u) W_k`` with ``u = (2x - low - high) / (high - low)``.

    It spans the same functions as :class:`Polynomial` of the same degree, but its features have
    unit mean square and are orthogonal under the uniform distribution on ``[low, high]``
    (E[sqrt((2j+1)(2k+1)) P_j(u) P_k(u)] = delta_jk for u ~ U(-1, 1)).  So an isotropic prior
    N(0, A^{-1} I) weighs every order alike, and for inputs spread over the interval
    Phi^T Phi is close to m I: a diagonal (mean-field) posterior is then close to the exact one,
    and gradient steps are well conditioned.  The monomials x^k instead grow as |x|^k (x^5
    reaches 32 on [-2, 2]): Phi^T Phi is ill-conditioned, a mean-field q(W) sits nats below the
    evidence, and an isotropic prior on their coefficients is in effect much weaker on the high
    orders than on the low ones (``examples/polynomial_degree.py``).
    P_k follows Bonnet's recursion (k + 1) P_{k+1} = (2k + 1) u P_k - k P_{k-1}.
    """

    kind = "legendre"

    def __init__(self, in_features: int, out_features: int, degree: int = 2,
                 low: float = -1.0, high: float = 1.0):
        super().__init__(in_features, out_features, degree)
        try:
            low, high = float(low), float(high)
        except (TypeError, ValueError):
            raise ValueError(f"legendre needs a finite interval low < high, got "
                             f"low={low!r}, high={high!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"legendre needs a finite interval low < high, got [{low}, {high}]")
        self.low, self.high = low, high

    def features(self, x: Tensor) -> Tensor:
        """``sqrt(2k + 1) P_k(u)`` for k = 1..d, power-major like :class:`Polynomial`."""
        if self.degree == 0:
            return x.new_zeros(x.shape[:-1] + (0,))
        u = (2 * x - (self.low + self.high)) / (self.high - self.low)
        previous, current = torch.ones_like(u), u
        out = [math.sqrt(3.0) * current]
        for k in range(1, self.degree):
            previous, current = current, ((2 * k + 1) * u * current - k * previous) / (k + 1)
            out.append(math.sqrt(2.0 * (k + 1) + 1) * current)
        return torch.cat(out, dim=-1)


for _name, _factory in {
    "linear": Linear,
    "tanh": TanhLinear,
    "relu": ReluLinear,
    "identity": Identity,
    "zero": Zero,
    "constant": Constant,
    "poly": Polynomial,
    "legendre": Legendre,
}.items():
    register_primitive(_name, _factory)
