"""Structure prior: gamma^{j,k} ~ Concrete(logits m^{j,k}, temperature c_temp) (METHOD.md section 2).

Samples live in log space: the Pyro site ``gamma[EDGE]`` holds ``log gamma`` distributed as
``ExpRelaxedCategorical``.  Its density differs from the simplex density by the Jacobian of exp,

    log p_simplex(gamma) = log p_ExpRelaxed(log gamma) - sum_l log gamma_l,

and every KL between two such distributions is the same in either space.  Working in log space
keeps log-densities finite at low temperature, where ``gamma`` itself underflows (METHOD.md
section 3: ``RelaxedOneHotCategorical.log_prob`` is non-finite for up to 100% of float32 samples
at t = 0.05).
"""

from __future__ import annotations

import math

import pyro
import torch
from torch import Tensor
from torch.distributions.utils import clamp_probs

from bnas_pyro.distributions import ExpRelaxedCategorical

from .protocol import SupernetModel, not_overridden

#: marks structure sites for the objectives (KL(q(Gamma) || p(Gamma|h)) is reported apart)
STRUCTURE_ROLE = {"bnas_role": "structure"}


def structure_site(edge_name: str) -> str:
    """The Pyro site name of edge ``edge_name``'s structure (its log gamma)."""
    return f"gamma[{edge_name}]"


def check_temperature(temperature: "float | Tensor") -> None:
    value = float(temperature)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"temperature c_temp must be a finite number > 0, got {value}")


def concrete(logits: Tensor, temperature: "float | Tensor") -> ExpRelaxedCategorical:
    """The Concrete distribution in log space (``log gamma``)."""
    t = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
    return ExpRelaxedCategorical(t, logits=logits)


def concrete_log_density(gamma_log: Tensor, logits: Tensor, temperature: "float | Tensor") -> Tensor:
    """log p(gamma | s, t) on the simplex, METHOD.md section 2, evaluated from ``log gamma``:

        p(gamma | s, t) = (K-1)! t^(K-1) prod_l [s_l gamma_l^(-t-1)] (sum_l s_l gamma_l^(-t))^(-K)
    """
    t = torch.as_tensor(temperature, dtype=gamma_log.dtype, device=gamma_log.device)
    K = gamma_log.shape[-1]
    log_s = logits - logits.logsumexp(-1, keepdim=True)
    return (math.lgamma(K) + (K - 1) * t.log()
            + (log_s - (t + 1) * gamma_log).sum(-1)
            - K * (log_s - t * gamma_log).logsumexp(-1))


class ConcreteGroups:
    """Every edge's Concrete (log space) at once, as one padded matrix of edges x primitives.

    Values and logits are vectors over the groups (edge, primitive) (length ``sum_e K_e``, the
    layout of ``hyper.structure_logits``; single-primitive edges hold log gamma = 0).  The
    formulas are those of ``ExpRelaxedCategorical`` (METHOD.md section 2), row by row:

        log gamma = log_softmax((log_softmax(s) + G) / t),  G = -log(-log U),  U ~ U(0, 1)
        log p(log gamma) = lgamma(K) + (K - 1) log t + sum_l (s'_l - t log gamma_l)
                           - K logsumexp_l (s'_l - t log gamma_l),   s' = log_softmax(s)

    The inner ``log_softmax(s)`` is not computed: it shifts a row by a constant, which the outer
    normalisation cancels.  Edges with fewer than K_max primitives are padded with -inf scores,
    so every formula is one tensor operation over all edges.  :meth:`rsample` draws one
    ``torch.rand(K_e)`` per edge in edge order, exactly the draws of the per-edge Pyro sites, so
    both give the same sample for the same random state.
    """

    def __init__(self, edge_sizes):
        self.edge_sizes = [int(k) for k in edge_sizes]
        self.num_groups = sum(self.edge_sizes)
        starts = [sum(self.edge_sizes[:e]) for e in range(len(self.edge_sizes))]
        self.multi = [k for k in self.edge_sizes if k > 1]
        width = max(self.multi, default=0)
        self._width = width
        padded, noise, present = [], [], []
        position = torch.full((self.num_groups,), len(self.multi) * width, dtype=torch.long)
        drawn = 0
        for start, k in zip(starts, self.edge_sizes):
            if k == 1:
                continue
            row = len(padded)
            padded.append([start + min(l, k - 1) for l in range(width)])
            noise.append([drawn + min(l, k - 1) for l in range(width)])
            present.append([l < k for l in range(width)])
            position[start:start + k] = row * width + torch.arange(k)
            drawn += k
        shape = (len(padded), width)
        self._padded = torch.tensor(padded, dtype=torch.long).reshape(shape)
        self._noise = torch.tensor(noise, dtype=torch.long).reshape(shape)
        self._present = torch.tensor(present, dtype=torch.bool).reshape(shape)
        self._full = bool(self._present.all())
        # every edge chooses among the same K > 1: the padded matrix is the vector's own view
        self._uniform = bool(self.multi) and all(k == width for k in self.edge_sizes)
        self._position = position   # where each group sits in the flattened rows (+1 zero)
        self._log_scale = sum(math.lgamma(k) for k in self.multi)
        self._degrees = sum(k - 1 for k in self.multi)
        self._on: dict[torch.device, tuple] = {}

    def __getstate__(self):   # the per-device index cache and the last draw are not state
        state = dict(self.__dict__)
        state["_on"] = {}
        state.pop("_last", None)
        state.pop("_drawn", None)
        return state

    def _index(self, device: torch.device):
        if device not in self._on:
            self._on[device] = tuple(t.to(device) for t in
                                     (self._padded, self._noise, self._present, self._position))
        return self._on[device]

    def _masked(self, scores: Tensor, present: Tensor) -> Tensor:
        return scores if self._full else scores.masked_fill(~present, -math.inf)

    def _assemble(self, rows: Tensor) -> Tensor:
        """The vector over the groups from the padded rows (0 on single-primitive edges);
        remembers the rows of the last vector made, so that reading it back costs no gather."""
        if self._uniform:
            value = rows.reshape(-1)
        else:
            position = self._index(rows.device)[3]
            value = torch.cat([rows.reshape(-1), rows.new_zeros(1)]).index_select(0, position)
        self._last = (value, rows)
        return value

    def rows(self, value: Tensor) -> Tensor:
        """The padded matrix ``(edges with K > 1, K_max)`` of a vector over the groups (padding
        repeats an edge's last entry)."""
        last = getattr(self, "_last", None)
        if last is not None and last[0] is value:
            return last[1]
        return self._gather(value, 0)

    def _gather(self, vector: Tensor, which: int) -> Tensor:
        """``vector[index]`` for the padded index ``which`` (0: groups, 1: noise draws); a view
        when every edge has the same number of primitives."""
        if self._uniform:
            return vector.view(len(self.multi), self._width)
        return vector[self._index(vector.device)[which]]

    def rsample(self, logits: Tensor, temperature: Tensor) -> Tensor:
        """A reparameterised draw of log gamma for every edge, as a vector over the groups."""
        if not self.multi:
            return logits.new_zeros(self.num_groups)
        present = self._index(logits.device)[2]
        u = clamp_probs(torch.cat([torch.rand(k, dtype=logits.dtype, device=logits.device)
                                   for k in self.multi]))
        gumbels = -((-(self._gather(u, 1).log())).log())
        scores = self._masked((self._gather(logits, 0) + gumbels) / temperature, present)
        value = self._assemble(scores.log_softmax(-1))
        self._drawn = value
        return value

    def log_prob(self, value: Tensor, logits: Tensor, temperature: Tensor) -> Tensor:
        """sum over edges of log Concrete(log gamma^e; logits^e, t)."""
        if not self.multi:
            return value.new_zeros(())
        present = self._index(value.device)[2]
        score = self._gather(logits, 0) - self.rows(value).mul(temperature)
        density = self._masked(score, present).log_softmax(-1)
        if not self._full:
            density = density.masked_fill(~present, 0.0)
        return density.sum() + self._log_scale + self._degrees * temperature.log()

    def normalise(self, value: Tensor) -> Tensor:
        """log gamma - logsumexp(log gamma) on every edge (so that gamma is on the simplex)."""
        if not self.multi or value is getattr(self, "_drawn", None):   # a draw is normalised
            return value
        present = self._index(value.device)[2]
        return self._assemble(self._masked(self.rows(value), present).log_softmax(-1))


class ConcreteStructurePrior:
    """p(Gamma | m, c_temp) = prod_{edges} Concrete(gamma^{e}; m^{e}, c_temp).

    Called inside the model; returns one ``log gamma`` per edge (``None`` for an edge with one
    primitive, where gamma = 1 and nothing is chosen).  The temperature is the model's
    ``temperature`` attribute (c_temp), so a schedule can anneal it.
    """

    def __call__(self, model: SupernetModel) -> list[Tensor | None]:
        t = model.temperature
        log_gammas: list[Tensor | None] = []
        for e, edge in enumerate(model.space.edges):
            if len(edge) == 1:
                log_gammas.append(None)
                continue
            log_gammas.append(pyro.sample(structure_site(edge.name),
                                          concrete(model.hyper.logits(e), t),
                                          infer=dict(STRUCTURE_ROLE)))
        return log_gammas

    def supports_fused_terms(self) -> bool:
        """Whether :meth:`fused_log_prob` computes what :meth:`__call__` samples (not so in a
        subclass that changes the prior)."""
        return not_overridden(self, ConcreteStructurePrior, "__call__")

    def fused_log_prob(self, model: SupernetModel, value: Tensor, groups: ConcreteGroups) -> Tensor:
        """log p(Gamma | m, c_temp) at ``value`` (log gamma per group), summed over the edges."""
        logits = model.hyper.structure_logits
        t = torch.as_tensor(model.temperature, dtype=logits.dtype, device=logits.device)
        return groups.log_prob(value, logits, t)

    def distributions(self, model: SupernetModel) -> dict[str, ExpRelaxedCategorical]:
        """The per-edge prior distributions (log space), keyed by site name."""
        return {structure_site(edge.name): concrete(model.hyper.logits(e), model.temperature)
                for e, edge in enumerate(model.space.edges) if len(edge) > 1}
