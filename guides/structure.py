"""The structure part of every guide: q(Gamma) = prod_e Concrete(s_q^e, t_q) (METHOD.md section 3)."""

from __future__ import annotations

import math

import pyro
import torch
from torch import Tensor, nn

from bnas_pyro.models.structure_priors import STRUCTURE_ROLE, check_temperature, concrete, structure_site


class ConcreteStructureGuide(nn.Module):
    """q(gamma^e) = Concrete(logits s_q^e, temperature t_q), sampled in log space.

    Args:
        model: the :class:`~bnas_pyro.models.BayesianSupernet` (not registered as a submodule:
            its hyperparameters stay out of the guide's ``parameters()``).
        temperature: ``None`` follows the model's c_temp (so annealing moves both); a number
            fixes t_q.
        learn_temperature: learn t_q (initialised at ``temperature`` or the model's c_temp).
        init_logits: initial s_q (default: 0, the uniform structure).
    """

    def __init__(self, model, temperature: float | None = None, learn_temperature: bool = False,
                 init_logits: Tensor | None = None):
        super().__init__()
        object.__setattr__(self, "model", model)
        n = sum(model.layout.edge_sizes)
        like = model.hyper.structure_logits  # theta follows h's dtype and device
        logits = (torch.zeros(n, dtype=like.dtype, device=like.device) if init_logits is None
                  else torch.as_tensor(init_logits, dtype=like.dtype, device=like.device).clone())
        if logits.shape != (n,):
            raise ValueError(f"init_logits must have shape ({n},), got {tuple(logits.shape)}")
        self.logits = nn.Parameter(logits)
        self.edge_sizes = list(model.layout.edge_sizes)
        self._starts = [sum(self.edge_sizes[:e]) for e in range(len(self.edge_sizes))]
        if temperature is not None:
            check_temperature(temperature)
        self.fixed_temperature = temperature
        if learn_temperature:
            start = temperature if temperature is not None else model.temperature
            self.log_temperature = nn.Parameter(torch.tensor(math.log(start), dtype=like.dtype,
                                                             device=like.device))
        else:
            self.log_temperature = None

    def temperature(self) -> "float | Tensor":
        if self.log_temperature is not None:
            return self.log_temperature.exp()
        return self.fixed_temperature if self.fixed_temperature is not None else self.model.temperature

    def edge_logits(self, edge: int) -> Tensor:
        return self.logits[self._starts[edge]:self._starts[edge] + self.edge_sizes[edge]]

    def distribution(self, edge: int):
        return concrete(self.edge_logits(edge), self.temperature())

    def sample(self) -> list[Tensor | None]:
        """Sample every edge's log gamma (``None`` for edges with a single primitive)."""
        out: list[Tensor | None] = []
        for e, edge in enumerate(self.model.space.edges):
            if len(edge) == 1:
                out.append(None)
            else:
                out.append(pyro.sample(structure_site(edge.name), self.distribution(e),
                                       infer=dict(STRUCTURE_ROLE)))
        return out

    def forward(self, *args, **kwargs) -> dict[str, Tensor]:
        """As a guide on its own: ignores the data, returns ``{site: log gamma}`` like an autoguide
        (so it can be one part of a ``pyro.infer.autoguide.AutoGuideList``)."""
        return {structure_site(e.name): v for e, v in zip(self.model.space.edges, self.sample())
                if v is not None}

    def supports_fused_terms(self) -> bool:
        """Whether :meth:`fused_sample` draws what :meth:`sample` draws (not in a subclass)."""
        return all(getattr(type(self), n) is getattr(ConcreteStructureGuide, n)
                   for n in ("sample", "distribution", "edge_logits"))

    def fused_sample(self) -> tuple[Tensor, Tensor]:
        """``(log gamma per group, log q(Gamma))``: every edge's draw at once, the same draws as
        :meth:`sample` for the same random state (``model.structure_groups``)."""
        groups = self.model.structure_groups
        t = torch.as_tensor(self.temperature(), dtype=self.logits.dtype, device=self.logits.device)
        value = groups.rsample(self.logits, t)
        return value, groups.log_prob(value, self.logits, t)

    def probabilities(self) -> list[Tensor]:
        """P_q(argmax gamma^e = l) = softmax(s_q^e)_l for every edge (METHOD.md section 2)."""
        return [torch.softmax(self.edge_logits(e), -1) for e in range(len(self.edge_sizes))]
