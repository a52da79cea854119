"""Pyro guides q(W, Gamma): mean-field, full-rank, Delta (MAP), multistart (gradient descent as VI).

Any callable with the model's signature ``(x, y=None, num_data=None)`` that samples the same sites
works as a guide."""

from bnas_pyro.registry import Registry

from .delta import DeltaGuide
from .full_rank import FullRankGuide
from .mean_field import MeanFieldGuide
from .multistart import MultistartGuide
from .structure import ConcreteStructureGuide
from .structured import DiscreteStructure, StructuredGuide

#: the guides a configuration names (``search.guide``), by name: ``factory(model, **options)``
GUIDES: Registry[type] = Registry("guide")
for _name, _guide in (("mean_field", MeanFieldGuide), ("full_rank", FullRankGuide),
                      ("delta", DeltaGuide), ("multistart", MultistartGuide),
                      ("structured", StructuredGuide)):
    GUIDES.register(_name, _guide)


def register_guide(name: str, factory: type, *, overwrite: bool = False) -> None:
    """Add a guide by name: ``factory(model, **options)`` returns the guide."""
    GUIDES.register(name, factory, overwrite=overwrite)


def available_guides() -> list[str]:
    """The guide names, in the order they were registered (the built-in ones first)."""
    return list(GUIDES)


def guide_class(name: str) -> type:
    """The guide registered under ``name``; unknown names raise ``KeyError`` naming the choices."""
    return GUIDES.get(name)


__all__ = [
    "GUIDES", "ConcreteStructureGuide", "DeltaGuide", "DiscreteStructure", "FullRankGuide",
    "MeanFieldGuide", "StructuredGuide",
    "MultistartGuide", "available_guides", "guide_class", "register_guide",
]
