"""What the pieces of the Pyro model (priors, likelihoods) read of the model they belong to."""

from __future__ import annotations

from typing import Any, Protocol


class SupernetModel(Protocol):
    """The joint model as its pieces see it (:class:`~bnas_pyro.models.BayesianSupernet`).

    Attributes: ``space`` (the :class:`~bnas_pyro.search_space.SearchSpace`), ``supernet``
    (f(x; W, Gamma)), ``hyper`` (h: log precisions, structure logits m, noise precision) and
    ``temperature`` (c_temp).
    """

    space: Any
    supernet: Any
    hyper: Any
    temperature: float


def not_overridden(obj: object, base: type, *names: str) -> bool:
    """Whether ``obj``'s class keeps ``base``'s own ``names`` (a subclass that overrides one of
    them may compute something else, so the fused fast path must not stand in for it)."""
    return all(getattr(type(obj), n) is getattr(base, n) for n in names)
