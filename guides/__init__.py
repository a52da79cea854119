"""Pyro guides q(W, Gamma): mean-field, full-rank, Delta (MAP), multistart (gradient descent as VI).

Any callable with the model's signature ``(x, y=None, num_data=None)`` that samples the same sites
works as a guide."""

from .delta import DeltaGuide
from .full_rank import FullRankGuide
from .mean_field import MeanFieldGuide
from .multistart import MultistartGuide
from .structure import ConcreteStructureGuide

__all__ = [
    "ConcreteStructureGuide", "DeltaGuide", "FullRankGuide", "MeanFieldGuide", "MultistartGuide",
]
