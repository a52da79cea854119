"""The interface every hypergradient strategy implements (METHOD.md section 5).

A strategy performs one *outer step* of :class:`~bnas_pyro.bilevel.BilevelSearch`: it runs the
inner steps T^eta on theta (however it needs to: with the search's optimiser, or unrolled) and
moves h = (log A, m) along its estimate of d Q(T^eta(theta_0, h), h) / d h.  Strategies are
interchangeable by name (:func:`bnas_pyro.hypergradients.get_strategy`) and each is testable
alone on a problem with a known answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from bnas_pyro.bilevel import BilevelSearch


@dataclass
class OuterStepInfo:
    """What one outer step reports: the last inner objective L and the outer objective Q."""

    L: float
    Q: float


class HypergradientStrategy(ABC):
    """One outer step: eta inner steps, then a hypergradient step on h."""

    name: ClassVar[str] = ""

    @abstractmethod
    def outer_step(self, search: "BilevelSearch") -> OuterStepInfo:
        """Advance theta by the inner steps and h by one hyper-step; report (L, Q)."""

    def state_dict(self) -> dict[str, Any]:
        """Strategy state to checkpoint (e.g. HOAG's tolerance); empty by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
