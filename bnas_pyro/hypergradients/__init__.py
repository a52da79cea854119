"""Hypergradient strategies, interchangeable by name (METHOD.md section 5)."""

from __future__ import annotations

from typing import Callable

from .base import HypergradientStrategy, OuterStepInfo
from .greedy import GreedyStrategy
from .joint import JointStrategy

_STRATEGIES: dict[str, Callable[..., HypergradientStrategy]] = {
    "joint": JointStrategy,
    "greedy": GreedyStrategy,
}


def register_strategy(name: str, factory: Callable[..., HypergradientStrategy]) -> None:
    _STRATEGIES[name] = factory


def available_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def get_strategy(spec: "str | HypergradientStrategy", **options) -> HypergradientStrategy:
    """A strategy instance from its name (``joint``, ``greedy``, ...) or an instance."""
    if isinstance(spec, HypergradientStrategy):
        return spec
    try:
        return _STRATEGIES[spec](**options)
    except KeyError:
        raise ValueError(f"unknown hypergradient {spec!r}; available: "
                         f"{', '.join(available_strategies())}") from None


__all__ = ["GreedyStrategy", "HypergradientStrategy", "JointStrategy", "OuterStepInfo",
           "available_strategies", "get_strategy", "register_strategy"]
