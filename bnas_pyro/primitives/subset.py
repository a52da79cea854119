"""Primitives that read a subset of the input features (METHOD.md section 6, the thesis's f_1).

    linear_subset(features=F):  g(x; W, b) = x[..., F] W + b
    tanh_subset(features=F):    g(x; W, b) = tanh(x[..., F] W + b)

e.g. the thesis's f_1 = tanh(w_1[0] x[0] + w_1[1]) is ``{"name": "tanh_subset", "features": [0]}``
(two parameters).  Importing :mod:`bnas_pyro.primitives` registers both names.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor

from .dense import Affine
from .registry import available_primitives, register_primitive


class SubsetAffine(Affine):
    """``act(x[..., features] W + b)``: an affine map (and activation) of some input features
    (METHOD.md section 1: a primitive g(x; w); section 6: the thesis's f_1 = tanh(w_1[0] x[0] + w_1[1])).

    Args:
        in_features, out_features: the sizes of the edge's source and target nodes.
        features: the input coordinates to read (distinct, each in ``[0, in_features)``).
        bias: include ``b``.
    """

    def __init__(self, in_features: int, out_features: int, features: Sequence[int] = (0,),
                 bias: bool = True):
        features = [int(f) for f in features]
        if not features:
            raise ValueError("features must name at least one input coordinate")
        if len(set(features)) != len(features):
            raise ValueError(f"features lists a coordinate twice: {features}")
        bad = [f for f in features if not 0 <= f < in_features]
        if bad:
            raise ValueError(f"features {bad} are out of range for an input of size {in_features}")
        super().__init__(len(features), out_features, bias)
        self.source_features = int(in_features)
        self.features = features
        self._index = torch.tensor(features, dtype=torch.long)

    def init_std(self, name: str) -> float:
        return 1.0 / math.sqrt(max(len(self.features), 1))

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return super().forward(x.index_select(-1, self._index.to(x.device)), params)


class SubsetTanh(SubsetAffine):
    """``tanh(x[..., features] W + b)``."""

    activation = staticmethod(torch.tanh)


for _name, _cls in (("linear_subset", SubsetAffine), ("tanh_subset", SubsetTanh)):
    if _name not in available_primitives():
        register_primitive(_name, _cls)

__all__ = ["SubsetAffine", "SubsetTanh"]
