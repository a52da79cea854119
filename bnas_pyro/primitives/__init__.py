"""Primitives: the functions an edge of the supernet can carry (METHOD.md section 1).

One registry (:mod:`~bnas_pyro.primitives.registry`) holds every primitive by name; importing
this package registers the built-in ones:

- :mod:`~bnas_pyro.primitives.dense`: linear, tanh, relu, identity, zero, constant, poly, legendre;
- :mod:`~bnas_pyro.primitives.conv`: the DARTS operations on (C, H, W) nodes and the image heads;
- :mod:`~bnas_pyro.primitives.subset`: primitives that read some input coordinates
  (the thesis's f_1).
"""

from . import conv, subset  # noqa: E402  (register the convolutional and subset primitives)
from .dense import (Affine, Constant, Identity, Legendre, Linear, Polynomial, ReluLinear,
                    TanhLinear, Zero)
from .registry import (ModulePrimitive, Primitive, PrimitiveFactory, available_primitives,
                       build_primitive, register_primitive)

__all__ = [
    "Affine", "Constant", "Identity", "Legendre", "Linear", "ModulePrimitive", "Polynomial",
    "Primitive", "PrimitiveFactory", "ReluLinear", "TanhLinear", "Zero", "available_primitives",
    "build_primitive", "conv", "register_primitive", "subset",
]
