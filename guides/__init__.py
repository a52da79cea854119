"""Pyro guides q(W, Gamma): mean-field, full-rank, Delta (MAP), multistart (gradient descent as VI).

Any callable with the model's signature ``(x, y=None, num_data=None)`` that samples the same sites
works as a guide."""

from .delta import DeltaGuide
from .full_rank import FullRankGuide
from .mean_field import MeanFieldGuide
from .multistart import MultistartGuide
from .structure import ConcreteStructureGuide

#: the guides a configuration names (``search.guide``), by name
_GUIDES: dict[str, type] = {
    "mean_field": MeanFieldGuide,
    "full_rank": FullRankGuide,
    "delta": DeltaGuide,
    "multistart": MultistartGuide,
}


def register_guide(name: str, factory: type, *, overwrite: bool = False) -> None:
    """Add a guide by name: ``factory(model, **options)`` returns the guide."""
    if not name or not isinstance(name, str):
        raise ValueError(f"guide name must be a non-empty string, got {name!r}")
    if name in _GUIDES and not overwrite:
        raise ValueError(f"guide {name!r} is already registered (pass overwrite=True)")
    _GUIDES[name] = factory


def available_guides() -> list[str]:
    return list(_GUIDES)


def guide_class(name: str) -> type:
    """The guide registered under ``name``; unknown names raise ``KeyError`` naming the choices."""
    try:
        return _GUIDES[name]
    except KeyError:
        raise KeyError(f"unknown guide {name!r}; available: {', '.join(sorted(_GUIDES))}") from None


__all__ = [
    "ConcreteStructureGuide", "DeltaGuide", "FullRankGuide", "MeanFieldGuide", "MultistartGuide",
    "available_guides", "guide_class", "register_guide",
]
