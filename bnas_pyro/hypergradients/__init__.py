"""Hypergradient strategies, interchangeable by name (METHOD.md section 5).

=========== ======================================================= ==========================
name        hypergradient                                            source
=========== ======================================================= ==========================
``joint``   h moved with theta by grad L (single level)              METHOD.md section 4
``greedy``  one-step unroll                                          Luketina et al. 2016
``drmad``   reverse mode along the line theta_0 -> theta_eta         Fu et al. 2016
``hoag``    implicit gradient, CG with shrinking tolerance           Pedregosa 2016
``unrolled`` exact reverse mode through eta SGD steps (reference)    Maclaurin et al. 2015
``random``  random search over h (baseline)                          --
=========== ======================================================= ==========================
"""

from __future__ import annotations

from typing import Callable

from bnas_pyro.registry import Registry

from .base import (Batch, GradientStrategy, HypergradientEstimate, HypergradientStrategy,
                   OuterStepInfo, SearchState)
from .drmad import DrMADStrategy
from .greedy import GreedyStrategy
from .hoag import CGResult, HoagStrategy, conjugate_gradient
from .joint import JointStrategy
from .random_search import RandomSearchStrategy
from .unrolled import UnrolledStrategy

#: every hypergradient strategy by name: ``factory(**options) -> HypergradientStrategy``
STRATEGIES: Registry[Callable[..., HypergradientStrategy]] = Registry("hypergradient")
for _name, _factory in (("joint", JointStrategy), ("greedy", GreedyStrategy),
                        ("drmad", DrMADStrategy), ("hoag", HoagStrategy),
                        ("unrolled", UnrolledStrategy), ("random", RandomSearchStrategy)):
    STRATEGIES.register(_name, _factory)


def register_strategy(name: str, factory: Callable[..., HypergradientStrategy], *,
                      overwrite: bool = False) -> None:
    """Add a strategy by name: ``factory(**options)`` returns the strategy."""
    STRATEGIES.register(name, factory, overwrite=overwrite)


def available_strategies() -> list[str]:
    return STRATEGIES.names()


def get_strategy(spec: "str | HypergradientStrategy", **options) -> HypergradientStrategy:
    """A strategy instance from its name (``joint``, ``greedy``, ...) or an instance."""
    if isinstance(spec, HypergradientStrategy):
        return spec
    return STRATEGIES.get(spec)(**options)


__all__ = ["STRATEGIES", "Batch", "CGResult", "DrMADStrategy", "GradientStrategy", "GreedyStrategy", "HoagStrategy",
           "HypergradientEstimate", "HypergradientStrategy", "JointStrategy", "OuterStepInfo",
           "RandomSearchStrategy", "SearchState", "UnrolledStrategy", "available_strategies",
           "conjugate_gradient", "get_strategy", "register_strategy"]
