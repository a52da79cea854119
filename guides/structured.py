"""A structure-aware guide: a discrete q(s) and weights q(W | s) that follow the prior where s is silent.

    q(s, W) = q(s) prod_{g in s} q_g(W_g) prod_{g not in s} p(W_g | h)

s is a discrete structure (one primitive per edge, a vertex of every simplex of METHOD.md section 1)
and g runs over the (edge, primitive) groups; "g in s" means that s picks primitive l on edge e for
g = (e, l).  q_g is a Gaussian, diagonal (``weights="mean_field"``) or full-rank within the group
(``weights="full_rank"``).

The bound (METHOD.md section 3, with q(W) allowed to depend on the structure):

    log p(y | X, h) >= ELBO(q) = sum_s q(s) ELBO_s - KL(q(s) || p(s | m)),
    ELBO_s = E_{q(W|s)} log p(y | X, W, s) - sum_{g in s} KL(q_g || p(W_g | h)),

since q(W | s) equals the prior on the groups absent from s (their KL is 0) and the likelihood of s
does not read them.  Its maximum over q(s) for fixed q_g is q(s) = p(s | m) exp(ELBO_s) / Z with
value log Z = log sum_s p(s | m) exp(ELBO_s) (Gibbs' inequality applied to KL(q(s) || q*(s))):
the posterior over structures, with each structure's evidence replaced by its own ELBO.  Why the
prior on absent groups matters: with q(W) shared and independent of s, the weights' KL is the same
for every s and drops out of the update of q(s), so the Occam factor sum_{g in s} KL_g never reaches
it; here the KL paid is sum_s q(s) sum_{g in s} KL_g = sum_g P_q(g in s) KL_g.

The discrete p(s | m) = prod_e softmax(m^e)_{s_e} is the vertex law of the Concrete prior
(P(argmax gamma^e = l) = softmax(m^e)_l, METHOD.md section 2).  q(s) is either

- ``"joint"``: a categorical over all N = prod_e K_e structures, and the bound is computed by exact
  enumeration (one batched forward pass over the N structures, one weight draw shared by all of
  them); the optimum above is attained exactly;
- ``"factorised"``: q(s) = prod_e q_e(s_e), for spaces too large to enumerate.  E_q KL is analytic
  (sum_e sum_l q_e(l) KL_(e,l)); the likelihood term is estimated by local expectations (Titsias and
  Lazaro-Gredilla 2015): for every edge e, s_{-e} ~ q is drawn once and s_e is summed out exactly,
  sum_e K_e forward passes per draw, an unbiased estimate of the bound and of its gradient in every
  q_e.  The optimum over each q_e given the others is q_e(l) proportional to
  p_e(l) exp(E_{q_{-e}} ELBO_{s_e = l}) (coordinate-wise the same Gibbs argument); it is the
  mean-field approximation of the posterior over structures.

``"auto"`` (default) is ``"joint"`` up to ``max_joint`` structures, else ``"factorised"``.

The search's schedule for q(s) (``structure_warmup``, ``structure_anneal``; fractions of the
search's steps, which the application passes as ``total_steps``; a library loop without
``total_steps`` runs neither).  Measured on a short search (a 240-row CSV, 96 structures, 30
epochs): at the first steps every q_g is still at its random initialisation, any structure with a
path from input to output predicts worse than the one with none, the natural-gradient step moves
q(s) by rho times ELBO differences of hundreds of nats, and q(s) was one-hot on a structure with no
input-to-output path after one epoch; its groups then only learn in the contexts q(s) draws, so it
never came back (test accuracy 0.35).  Two remedies, neither changing the bound at the end:

- warm-up: for the first ``structure_warmup`` steps q(s) is held at its initial value and only the
  q_g move, each under q(s | g in s) (the preconditioner), so every group is fitted before any
  structure is preferred.  The bound optimised meanwhile is the same one, restricted to that q(s);
- annealing: then the q(s) step targets q(s) proportional to p(s | m) exp(ELBO_s / t) (the natural
  gradient of sum_s q(s) ELBO_s / t - KL(q(s) || p(s | m))), with t falling geometrically from the
  number of data (per-datum ELBO differences) to 1 over ``structure_anneal`` steps
  (deterministic annealing, Ueda and Nakano 1998), so q(s) stays broad, and the groups keep
  learning in every context, while the q_g are still far from their fits.  From then on t = 1 and
  the fixed point is q(s) proportional to p(s | m) exp(ELBO_s) again.

Weights per structure (joint q(s) only, ``weights_per_structure``): q(W | s) =
prod_{g in s} q_{g,s}(W_g) prod_{g not in s} p(W_g | h), one q_{g,s} per (group, structure).  The
bound has the same form, but ELBO_s no longer shares its q_g with the other structures containing
g: where the posterior of W_g depends on what else is in s (correlated inputs), a shared q_g is
set by the dominant structure and the other structures' ELBO_s fall below their evidence (measured
on 4-group feature-subset regression: the runner-up 0.9 nats below, total variation 0.12 from the
exact posterior over structures; 0.04 per structure).  The optimum over q(s) is again
q(s) proportional to p(s | m) exp(ELBO_s), each ELBO_s now maximised on its own.  Memory
S * (variational parameters); ``"auto"`` uses it where two or more edges vary and that stays
under ``max_structure_weights`` scalars.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from bnas_pyro.models.structure_priors import STRUCTURE_ROLE, structure_site
from bnas_pyro.models.weight_priors import WEIGHT_SITE, GaussianWeightPrior
from bnas_pyro.objectives import ElboTerms
from bnas_pyro.supernet_structures import (StructurePlan, forward_structures, fusable_space,
                                           plan_structures)

from .mean_field import _inverse_softplus, initial_locations
from .optimizer_wrapper import WrappedOptimizer

WeightFamily = Literal["mean_field", "full_rank"]
StructureFamily = Literal["auto", "joint", "factorised"]

#: log gamma of the primitives a discrete structure leaves out (exp underflows to exactly 0)
ABSENT_LOG_GAMMA = -1.0e4
#: floor of P_q(g in s) in the preconditioner
_TINY = 1.0e-25
#: the most groups whose KL sums are one split and one sum per group
_SPLIT_GROUPS = 64
#: the factorised draws whose StructurePlan is kept
_KEPT_PLANS = 32
#: structures x rows of one forward pass of :meth:`StructuredGuide.structure_mixture`
_MIXTURE_ROWS = 1 << 17
#: structures x rows of one forward pass of the likelihood on a CPU, where the activations of a
#: larger pass leave the cache: the ELBO of the default search's 48 structures on its 1,079
#: training rows took 13.9 ms in one pass and 7.5 ms in four passes of 270 rows (one thread,
#: no gradients; with gradients, on 1,024 rows, 13.8 and 11.9 ms)
_CACHE_ROWS = 1 << 14


def _equal_size_stretches(sizes: Sequence[int]) -> tuple[list[tuple[int, int]], Tensor | None]:
    """Groups of sizes ``sizes``, laid one after the other, as stretches of equal-sized
    neighbours (an empty group takes no room, so it does not break a stretch).

    Returns ([(count, size), ...] in memory order, ``order``): ``order[g]`` is where group g's
    sum sits in the stretches' sums laid end to end and followed by one 0, which every empty
    group reads; ``None`` when no group is empty (the sums are then in group order already).
    """
    runs: list[list[int]] = []
    slots: list[int | None] = []
    total = 0   # the non-empty groups so far: the next one's slot
    for n in sizes:
        if n == 0:
            slots.append(None)
            continue
        if runs and runs[-1][1] == n:
            runs[-1][0] += 1
        else:
            runs.append([1, n])
        slots.append(total)
        total += 1
    if all(slot is not None for slot in slots) and runs:
        return [tuple(r) for r in runs], None
    order = torch.tensor([total if slot is None else slot for slot in slots], dtype=torch.long)
    return [tuple(r) for r in runs], order


def _passes(rows: int, structures: int, device: torch.device,
            most: int | None = None) -> list[tuple[int, int]]:
    """The row ranges [a, b) of the forward passes over ``rows`` rows of ``structures``
    structures: at most ``most`` structures x rows each (which bounds the activations' memory;
    ``None``: no bound), on a CPU also at most :data:`_CACHE_ROWS` (which keeps them in the
    cache), and of nearly equal sizes; one empty range for no rows."""
    limit = most
    if device.type == "cpu":
        limit = _CACHE_ROWS if most is None else min(most, _CACHE_ROWS)
    if limit is None:
        return [(0, rows)]
    per_pass = max(1, limit // max(structures, 1))
    count = max(1, -(-rows // per_pass))
    bounds = [rows * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class DiscreteStructure(nn.Module):
    """q(s): a categorical over the enumerated structures (``joint``) or one per edge.

    ``choices`` (N, E) lists every structure as the index of its primitive on each edge (edges with
    one primitive included, always 0), in ``itertools.product`` order.
    """

    def __init__(self, model, joint: bool, init_logits: Tensor | None = None,
                 support: Tensor | None = None):
        super().__init__()
        self.edge_sizes = list(model.layout.edge_sizes)
        self._starts = [sum(self.edge_sizes[:e]) for e in range(len(self.edge_sizes))]
        self.joint = bool(joint) or support is not None
        like = model.hyper.structure_logits
        if support is not None:
            support = torch.as_tensor(support, dtype=torch.long).reshape(-1, len(self.edge_sizes))
            bad = (support < 0) | (support >= torch.tensor(self.edge_sizes))
            if bad.any():
                row, edge = bad.nonzero()[0].tolist()
                raise ValueError(f"support row {row}: edge {model.space.edges[edge].name} has no "
                                 f"primitive {int(support[row, edge])}")
        n = (math.prod(self.edge_sizes) if support is None else support.shape[0]) if self.joint \
            else sum(self.edge_sizes)
        logits = (torch.zeros(n, dtype=like.dtype, device=like.device) if init_logits is None
                  else torch.as_tensor(init_logits, dtype=like.dtype, device=like.device).clone())
        if logits.shape != (n,):
            raise ValueError(f"init_logits must have shape ({n},) for a "
                             f"{'joint' if joint else 'factorised'} q(s), got {tuple(logits.shape)}")
        self.logits = nn.Parameter(logits)
        if self.joint:
            choices = support if support is not None else torch.tensor(
                list(itertools.product(*[range(k) for k in self.edge_sizes])),
                dtype=torch.long).reshape(-1, len(self.edge_sizes))
            self.register_buffer("choices", choices.to(like.device), persistent=False)
            # the group (edge, primitive) of every edge of every structure, (N, E)
            starts = torch.tensor(self._starts, dtype=torch.long, device=like.device)
            self.register_buffer("_support_groups", self.choices + starts, persistent=False)

    def edge_logits(self, edge: int) -> Tensor:
        if self.joint:
            raise AttributeError("a joint q(s) has no per-edge logits; use probabilities()")
        return self.logits[self._starts[edge]:self._starts[edge] + self.edge_sizes[edge]]

    def log_probs(self) -> Tensor:
        """log q(s) over the enumerated structures (joint only)."""
        return torch.log_softmax(self.logits, -1)

    def probabilities(self) -> list[Tensor]:
        """P_q(s_e = l) for every edge (the marginals of a joint q)."""
        if not self.joint:
            return [torch.softmax(self.edge_logits(e), -1) for e in range(len(self.edge_sizes))]
        p = torch.softmax(self.logits, -1)
        marginals = p.new_zeros(sum(self.edge_sizes)).index_add(
            0, self._support_groups.reshape(-1), p.repeat_interleave(len(self.edge_sizes)))
        return list(marginals.split(self.edge_sizes))

    @torch.no_grad()
    def min_prior_kl(self) -> Tensor:
        """min over the prior logits m of KL(q(s) || prod_e softmax(m^e)): 0 for a factorised q
        (m = q's logits), sum_e H(q_e) - H(q) for a joint one (the marginals are the minimiser)."""
        if not self.joint:
            return self.logits.new_zeros(())
        p = torch.softmax(self.logits, -1)
        joint_h = -(p * p.clamp_min(1e-300).log()).sum()
        marginal_h = sum(-(m * m.clamp_min(1e-300).log()).sum() for m in self.probabilities())
        return (marginal_h - joint_h).clamp_min(0.0)

    def sample(self, num: int = 1) -> Tensor:
        """``num`` structures s ~ q, shape (num, E)."""
        with torch.no_grad():
            if self.joint:
                idx = torch.multinomial(torch.softmax(self.logits, -1), num, replacement=True)
                return self.choices[idx]
            return torch.stack([torch.multinomial(p, num, replacement=True)
                                for p in self.probabilities()], -1)


class StructuredGuide(nn.Module):
    """q(s, W) = q(s) prod_{g in s} q_g(W_g) prod_{g not in s} p(W_g | h) (module docstring).

    Optimises the bound sum_s q(s) ELBO_s - KL(q(s) || p(s | m)) through :meth:`objective_terms`
    (what :func:`bnas_pyro.objectives.guide_terms` and the search call), whose optimum over q(s) is
    q(s) proportional to p(s | m) exp(ELBO_s).

    Args:
        model: a :class:`~bnas_pyro.models.BayesianSupernet` with the Gaussian weight prior.
        weights: ``"mean_field"`` (q_g diagonal) or ``"full_rank"`` (q_g a full Gaussian within each
            (edge, primitive) group; memory sum_g n_g^2: small models).
        structure: ``"auto"``, ``"joint"`` or ``"factorised"`` (module docstring).
        max_joint: the largest number of structures ``"auto"`` enumerates.
        init_scale: initial standard deviation of every q_g.
        init_loc, generator: initial means (default Glorot-like, seeded by ``generator``).
        init_logits: initial logits of q(s) (default 0: uniform).
        precondition: divide the gradient of every q_g (and of the precisions, through KL_g) by
            P_q(g in s), so that q_g follows E_{q(s | g in s)} grad ELBO_s: each group is fitted as
            if its primitive were chosen, whatever q(s) says.  A positive diagonal preconditioner:
            the value of the bound and its gradient in q(s) are unchanged, and so is every
            stationary point with P_q(g in s) > 0.  Without it a primitive that q(s) drops early
            stops learning (its gradient is weighted by P_q(g in s)) and q(s) locks in (measured
            on the polynomial problem: total variation 0.56 from the exact posterior over
            structures instead of 0.03).
        structure_lr: rho, the step of q(s)'s natural-gradient updates
            (:class:`NaturalStructureOptimizer`).
        support: restrict a joint q(s) to these structures, (S, E) primitive indices per edge
            (default: all); a single row fits q(W | s) of that one structure.
        weights_per_structure: ``True``, ``False`` or ``"auto"`` (module docstring): one q_g per
            (group, structure) for a joint q(s); the means, scales (and full-rank factors) then
            carry a leading dimension S, and the preconditioner gives every q(W | s) its own
            ELBO_s's gradient whole (the precisions keep the q(s)-weighted one).
        max_structure_weights: the budget of ``"auto"`` in scalars, S * (2 P + sum_g n_g^2).
        structure_warmup: steps (a whole number) or the fraction of ``total_steps`` during which
            q(s) is held and only q(W) moves (module docstring).
        structure_anneal: steps or fraction of ``total_steps`` over which the structure
            temperature falls from ``initial_temperature`` to 1 after the warm-up.
        initial_temperature: t at the end of the warm-up (default: the number of data).
        total_steps: the search's number of optimiser steps (set by the application); without it
            fractions mean no warm-up and no annealing.
    """

    couples_weights_to_structure = True  # q(W | s): the scaled prior is well posed at vertices
    #: its q(s) steps all-reduce their estimates (NaturalStructureOptimizer.set_parallel)
    data_parallel = True

    def __init__(self, model, weights: WeightFamily = "mean_field",
                 structure: StructureFamily = "auto", max_joint: int = 64,
                 init_scale: float = 0.05, init_loc: Tensor | None = None,
                 init_logits: Tensor | None = None, generator: torch.Generator | None = None,
                 precondition: bool = True, structure_lr: float = 0.02,
                 support: Tensor | None = None,
                 weights_per_structure: bool | Literal["auto"] = "auto",
                 max_structure_weights: int = 200_000,
                 structure_warmup: float = 0.1, structure_anneal: float = 0.5,
                 initial_temperature: float | None = None, total_steps: int | None = None):
        super().__init__()
        for name, value in (("structure_warmup", structure_warmup),
                            ("structure_anneal", structure_anneal)):
            if value < 0 or (value >= 1 and value != int(value)):
                raise ValueError(f"{name} must be a fraction in [0, 1) of the search's steps or a "
                                 f"whole number of steps, got {value}")
        if initial_temperature is not None and initial_temperature < 1:
            raise ValueError(f"initial_temperature must be >= 1, got {initial_temperature}")
        self.initial_temperature = initial_temperature
        self.anneal_steps = self._steps_of(structure_anneal, total_steps)
        self.warmup_steps = self._steps_of(structure_warmup, total_steps)
        self.precondition = bool(precondition)
        if not 0 < structure_lr <= 1:
            raise ValueError(f"structure_lr must be in (0, 1], got {structure_lr}")
        self.structure_lr = float(structure_lr)
        self._c_reg = 1.0
        self._natural: Tensor | None = None
        self._natural_count = 0
        self._plans: dict = {}   # StructurePlan per (structures, weight rows, device)
        self._fusable = fusable_space(model.supernet)
        self._temperature = 1.0
        if weights not in ("mean_field", "full_rank"):
            raise ValueError(f"weights must be 'mean_field' or 'full_rank', got {weights!r}")
        if structure not in ("auto", "joint", "factorised"):
            raise ValueError(f"structure must be 'auto', 'joint' or 'factorised', got {structure!r}")
        if not isinstance(getattr(model, "weight_prior", None), GaussianWeightPrior):
            raise ValueError(f"StructuredGuide needs the Gaussian weight prior (its KL per group is "
                             f"analytic); got {type(getattr(model, 'weight_prior', None)).__name__}")
        object.__setattr__(self, "model", model)
        num = model.space.num_structures
        joint = structure == "joint" or (structure == "auto" and num <= int(max_joint))
        self.weights_family = weights
        self.structure = DiscreteStructure(model, joint, init_logits, support)
        layout = model.layout
        sizes = layout.group_sizes().tolist()
        self.per_structure = self._choose_per_structure(weights_per_structure, sizes,
                                                        int(max_structure_weights))
        loc = initial_locations(model, init_loc, generator)
        lead = (self.structure.choices.shape[0],) if self.per_structure else ()
        self.loc = nn.Parameter(loc.expand(*lead, -1).clone())
        self.scale_unconstrained = nn.Parameter(
            torch.full_like(self.loc, _inverse_softplus(init_scale)))
        starts = [0]
        for n in sizes:
            starts.append(starts[-1] + n)
        self._group_bounds = [(a, b) for a, b in zip(starts[:-1], starts[1:])]
        # -n_g / 2 of every group, for the KL's constant and log-precision terms
        self.register_buffer("_neg_half_sizes", torch.tensor(sizes, dtype=self.loc.dtype,
                                                             device=self.loc.device) * -0.5,
                             persistent=False)
        # the groups some structure of a joint q's support uses (the others follow the prior)
        live_groups = torch.ones(layout.num_groups, dtype=torch.bool)
        if self.structure.joint:
            live_groups = torch.zeros(layout.num_groups, dtype=torch.bool)
            live_groups[self.structure._support_groups.reshape(-1).cpu()] = True
        scalars = live_groups[model.supernet.group_index.cpu()].nonzero()[:, 0]
        # the lengths of the groups' runs in W, and in its live part (0 for the others)
        self._split_sizes = {False: list(sizes),
                             True: [n if alive else 0
                                    for n, alive in zip(sizes, live_groups.tolist())]}
        # for _group_sums: the stretches of equal-sized groups, and where each group's sum lands
        self._sum_runs = {}
        for flag, split in self._split_sizes.items():
            runs, order = _equal_size_stretches(split)
            name = None if order is None else f"_sum_order_{int(flag)}"
            if name is not None:
                self.register_buffer(name, order.to(self.loc.device), persistent=False)
            self._sum_runs[flag] = (runs, name)
        self.register_buffer("_live_groups", live_groups.to(self.loc.device), persistent=False)
        self.register_buffer("_live", None if bool(live_groups.all())
                             else scalars.to(self.loc.device), persistent=False)
        if weights == "full_rank":
            self.offdiag = nn.ParameterList(
                [nn.Parameter(self.loc.new_zeros(*lead, n, n)) for n in sizes])
        # which group each multi-primitive edge choice belongs to: group = offsets[e] + l
        self._group_offsets = list(layout.group_offsets)
        self.register_buffer("_offsets", torch.tensor(self._group_offsets, dtype=torch.long,
                                                      device=self.loc.device), persistent=False)
        if self.structure.joint:   # (N, num_groups): 0 where structure s uses group g, else -inf
            mask = torch.full((self.structure.choices.shape[0], layout.num_groups), -math.inf,
                              dtype=self.loc.dtype, device=self.loc.device)
            mask.scatter_(1, self._groups_of(self.structure.choices), 0.0)
            self.register_buffer("_support_log_mask", mask, persistent=False)
            # (N, num_groups): 1 where structure s uses group g, else 0 (P_q(g in s) = q @ it)
            self.register_buffer("_support_membership", (mask == 0).to(mask.dtype),
                                 persistent=False)
        # the structure logits as an (edges x K_max) matrix, padding at index num_groups
        sizes_e, k_max = self.structure.edge_sizes, max(self.structure.edge_sizes)
        pad = torch.full((len(sizes_e), k_max), layout.num_groups, dtype=torch.long)
        for e, k in enumerate(sizes_e):
            pad[e, :k] = torch.arange(k) + self._group_offsets[e]
        unpad = torch.cat([torch.arange(k) + e * k_max for e, k in enumerate(sizes_e)])
        self.register_buffer("_prior_pad", pad.to(self.loc.device), persistent=False)
        self.register_buffer("_prior_unpad", unpad.to(self.loc.device), persistent=False)
        if self.structure.joint:   # where each edge's choice of each structure sits in the matrix
            self.register_buffer("_support_prior_index",
                                 unpad[self.structure._support_groups.cpu()].to(self.loc.device),
                                 persistent=False)

    @staticmethod
    def _steps_of(value: float, total_steps: int | None) -> int:
        """A schedule length: a fraction of ``total_steps`` (0 when it is not known), or steps."""
        if 0 < value < 1:
            return 0 if total_steps is None else int(round(value * int(total_steps)))
        return int(value)

    def _choose_per_structure(self, option, sizes: list[int], budget: int) -> bool:
        """q(W | s) per structure: only for a joint q(s), and (``"auto"``) where a group is shared
        by structures that differ elsewhere (two or more edges vary over the support) and the
        S * (number of variational parameters) stays under ``budget`` scalars."""
        if option not in (True, False, "auto"):
            raise ValueError(f"weights_per_structure must be True, False or 'auto', got {option!r}")
        if option is False:
            return False
        if not self.structure.joint:
            if option is True:
                raise ValueError("weights_per_structure=True needs a joint q(s) (structure='joint' "
                                 "or a space of at most max_joint structures)")
            return False
        if option is True:
            return True
        choices = self.structure.choices
        varying = sum(int(choices[:, e].unique().numel() > 1) for e in range(choices.shape[1]))
        per = 2 * sum(sizes) + (sum(n * n for n in sizes) if self.weights_family == "full_rank"
                                else 0)
        return varying >= 2 and choices.shape[0] * per <= budget

    @property
    def joint(self) -> bool:
        return self.structure.joint

    def _rows_of(self, choices: Tensor) -> Tensor:
        """The index of every row of ``choices`` (S', E) in ``structure.choices`` (joint q)."""
        table = self.structure.choices
        match = (choices[:, None, :] == table[None, :, :]).all(-1)
        found = match.any(-1)
        if not bool(found.all()):
            row = int((~found).nonzero()[0])
            raise ValueError(f"structure {choices[row].tolist()} is not in the support of q(s)")
        return match.float().argmax(-1)

    def restricted(self, choice) -> "StructuredGuide":
        """A guide with q(s) held at the one structure ``choice`` (primitive index per edge) and
        its q(W | s) copied from this guide's (per-structure or shared) q_g."""
        choice = torch.as_tensor(choice, dtype=torch.long, device=self.loc.device).reshape(1, -1)
        row = int(self._rows_of(choice)[0]) if self.per_structure else None
        pick = (lambda t: t[row]) if self.per_structure else (lambda t: t)
        out = StructuredGuide(self.model, weights=self.weights_family, support=choice.cpu(),
                              init_loc=pick(self.loc.detach()), weights_per_structure=False,
                              structure_lr=self.structure_lr, precondition=self.precondition)
        out = out.to(device=self.loc.device, dtype=self.loc.dtype)
        with torch.no_grad():
            out.scale_unconstrained.copy_(pick(self.scale_unconstrained))
            if self.weights_family == "full_rank":
                for a, b in zip(out.offdiag, self.offdiag):
                    a.copy_(pick(b))
        return out

    # ------------------------------------------------------------------ q(W)
    @property
    def scale(self) -> Tensor:
        return softplus(self.scale_unconstrained)

    def _tril(self, g: int, scale: Tensor) -> Tensor:
        a, b = self._group_bounds[g]
        return self.offdiag[g].tril(-1) + torch.diag_embed(scale[..., a:b])

    def sample_weights(self, scale: Tensor | None = None) -> Tensor:
        """W ~ prod_g q_g (every group; which of them a structure reads is up to the structure):
        shape (P,), or (S, P) with weights per structure (one row per ``structure.choices``);
        ``scale``: :attr:`scale` where the caller has it already."""
        scale = self.scale if scale is None else scale
        eps = torch.randn_like(self.loc)
        if self.weights_family == "mean_field":
            return self.loc + scale * eps
        pieces = [(self._tril(g, scale) @ eps[..., a:b, None])[..., 0]
                  for g, (a, b) in enumerate(self._group_bounds)]
        return self.loc + torch.cat(pieces, -1) if pieces else self.loc

    def group_kls(self, detach_prior: bool = False, scale: Tensor | None = None) -> Tensor:
        """KL(q_g || p(W_g | h)) for every group g, shape (num_groups,) (or (S, num_groups) with
        weights per structure), analytic:
        1/2 [sum_i a_i (Sigma_ii + mu_i^2) - n_g - sum_i log a_i - log det Sigma_g].
        A group no structure of a joint q's support uses follows its prior under q(s, W) (module
        docstring): its KL is 0 and its q_g is not evaluated (a refit at one structure reads
        only that structure's groups); ``scale``: :attr:`scale` where the caller has it already."""
        hyper = self.model.hyper
        live = self._live
        loc = self.loc
        subset = live is not None and self.weights_family == "mean_field"
        if scale is None:
            scale_u = self.scale_unconstrained
            scale = softplus(scale_u.index_select(-1, live) if subset else scale_u)
        elif subset:
            scale = scale.index_select(-1, live)
        if subset:
            loc = loc.index_select(-1, live)
        else:
            live = None
        if self.weights_family == "mean_field":
            var = scale * scale
        else:
            var = torch.cat([(self._tril(g, scale) ** 2).sum(-1)
                             for g in range(len(self._group_bounds))], -1)
        if hyper.precision_level == "group":
            # A is constant within a group: sum the moments per group first, then
            # 1/2 [A_g sum_i (Sigma_ii + mu_i^2) - n_g (1 + log A_g) - log det Sigma_g], with
            # log det Sigma_g = 2 sum_i log s_i (a triangular factor's diagonal)
            log_a = hyper.log_precision.detach() if detach_prior else hyper.log_precision
            moments = torch.stack([torch.addcmul(var, loc, loc), scale.log()], 0)
            sums = self._group_sums(moments, live is not None)
            neg_half_n = self._neg_half_sizes.to(sums.dtype)
            # as two addcmuls: -(sum_i log s_i + n_g/2 (1 + log A_g)), then + 1/2 A_g sum_i (...)
            rest = torch.addcmul(neg_half_n - sums[1], neg_half_n, log_a)
            kls = torch.addcmul(rest, log_a.exp(), sums[0], value=0.5)
            return kls if self._live is None else kls * self._live_groups.to(kls.dtype)
        logdet = 2 * scale.log()
        log_a = hyper.log_precision_per_parameter()
        if live is not None:
            log_a = log_a.index_select(0, live)
        if detach_prior:
            log_a = log_a.detach()
        per = 0.5 * (log_a.exp() * (var + loc**2) - 1 - log_a - logdet)
        kls = self._group_sums(per, live is not None)
        return kls if self._live is None else kls * self._live_groups.to(kls.dtype)

    def _group_sums(self, values: Tensor, live: bool) -> Tensor:
        """Per-group sums over the last dimension of ``values`` (every scalar, or the live ones).

        The groups are contiguous runs of the flat W, and neighbours often have one size (the
        primitives of one edge; an empty group takes no room): each stretch of c groups of n
        scalars is viewed as (c, n) and summed at once, the sums then put in group order (0 for
        the empty groups) by one index_select.  That is a few autograd nodes where one sum per
        group would be three per group.  With many stretches, one ``index_add`` (five times
        slower on a CPU than the sums; ``segment_reduce`` has no second derivative, which the
        greedy and unrolled hypergradients take)."""
        runs, order = self._sum_runs[live]
        if len(runs) <= _SPLIT_GROUPS:
            lead = values.shape[:-1]
            parts = values.split([c * n for c, n in runs], -1) if len(runs) > 1 else [values]
            sums = [part.reshape(*lead, c, n).sum(-1) for part, (c, n) in zip(parts, runs)]
            if order is None:   # every group holds scalars, in order: nothing to place
                return sums[0] if len(sums) == 1 else torch.cat(sums, -1)
            sums.append(values.new_zeros(*lead, 1))   # what the empty groups read
            return torch.cat(sums, -1).index_select(-1, getattr(self, order))
        sizes = self._split_sizes[live]
        index = self.model.supernet.group_index
        if live:
            index = index.index_select(0, self._live)
        return values.new_zeros(*values.shape[:-1], len(sizes)).index_add(-1, index, values)

    def structure_weight_kls(self, kls: Tensor, choices: Tensor,
                             rows: Tensor | None = None) -> Tensor:
        """sum_{g in s} KL(q_g || p(W_g | h)) for every row s of ``choices`` from ``group_kls()``;
        ``rows``: the rows of ``structure.choices`` they are (weights per structure only).  One
        product with the membership matrix for a joint q's own support."""
        if kls.dim() == 1 and self.joint and choices is self.structure.choices:
            return self._support_membership @ kls
        groups = self._groups_of(choices)
        if kls.dim() == 1:
            return kls[groups].sum(-1)
        if rows is None:
            rows = self._rows_of(choices)
        return kls[rows].gather(1, groups).sum(-1)

    # ------------------------------------------------------------------ q(s)
    def _prior_padded_log_probs(self) -> Tensor:
        """log p(s_e = l | m) as one flat (edges x K_max) matrix (-inf in the padding): the
        logits padded, one log_softmax."""
        logits = self.model.hyper.structure_logits
        pad = self._prior_pad   # index_select, not indexing: its backward is an index_add
        padded = torch.cat([logits, logits.new_full((1,), -math.inf)]).index_select(
            0, pad.reshape(-1)).view(pad.shape)
        return torch.log_softmax(padded, -1).reshape(-1)

    def _prior_group_log_probs(self) -> Tensor:
        """log p(s_e = l | m) for every group (e, l), shape (num_groups,)."""
        return self._prior_padded_log_probs().index_select(0, self._prior_unpad)

    def _prior_log_probs(self) -> list[Tensor]:
        return list(self._prior_group_log_probs().split(self.structure.edge_sizes))

    def _support_prior_log_probs(self) -> Tensor:
        """log p(s | m) for every structure of a joint q, shape (N,): its edges' choices read
        straight from the padded matrix (one gather)."""
        index = self._support_prior_index
        return self._prior_padded_log_probs().index_select(0, index.reshape(-1)).view(
            index.shape).sum(-1)

    def structure_kl(self, joint_log_probs: tuple[Tensor, Tensor] | None = None,
                     q: Tensor | None = None) -> Tensor:
        """KL(q(s) || p(s | m)), exact; ``joint_log_probs``: (log q(s), log p(s | m)) over a
        joint q's support, and ``q``: q(s) there, where the caller has them already."""
        if self.joint:
            log_q, log_p = joint_log_probs or (self.structure.log_probs(),
                                               self._support_prior_log_probs())
            return torch.dot(log_q.exp() if q is None else q, log_q - log_p)
        prior = self._prior_log_probs()
        total = self.loc.new_zeros(())
        for e, lp in enumerate(prior):
            log_q = torch.log_softmax(self.structure.edge_logits(e), -1)
            total = total + (log_q.exp() * (log_q - lp)).sum()
        return total

    def group_probabilities(self, q: Tensor | None = None) -> Tensor:
        """P_q(g in s) for every group, shape (num_groups,); for a joint q
        sum_s q(s) [g in s], one product with the support's membership matrix (``q``: q(s) over
        the support where the caller has it already)."""
        if self.joint:
            q = self.structure_probabilities() if q is None else q
            return q @ self._support_membership
        return torch.cat(self.structure.probabilities())

    def structure_probabilities(self) -> Tensor:
        """q(s) over ``structure.choices`` (joint q only), shape (N,)."""
        return torch.softmax(self.structure.logits, -1)

    # ------------------------------------------------------------------ the bound
    def _groups_of(self, choices: Tensor) -> Tensor:
        """The group g = (e, s_e) of every edge of every structure, shape (S, E)."""
        return choices + self._offsets.to(choices.device)

    def _structures_to_evaluate(self, log_q: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(choices (S, E), value weights (S,), gradient weights (S, num_groups)): the structures
        whose likelihood enters this draw, the weight of each in the estimate of
        E_q log p(y | W, s), and the weight of each in the (preconditioned) gradient of each q_g:
        q(s | g in s) for a joint q; for a factorised q, row (e, l) carries group (e, l) with weight
        1 (s_{-e} ~ q is a draw of q(s | s_e = l)) and the single-primitive groups with its value
        weight.  ``log_q``: a joint q's log q(s) where the caller has it already."""
        num_groups = self.model.layout.num_groups
        sizes = self.structure.edge_sizes
        single = [self._group_offsets[e] for e, k in enumerate(sizes) if k == 1]
        if self.joint:
            log_q = self.structure.log_probs() if log_q is None else log_q
            with torch.no_grad():
                # log q(s) on the groups of s, -inf off them; log P(g) = logsumexp over the
                # structures containing g (made finite where none does: its weights are then 0)
                on_groups = log_q[:, None] + self._support_log_mask
                log_p = torch.logsumexp(on_groups, 0).clamp_min(torch.finfo(log_q.dtype).min)
                grad_w = (on_groups - log_p).exp()
            return self.structure.choices, log_q.exp(), grad_w
        probs = self.structure.probabilities()
        multi = [e for e, k in enumerate(sizes) if k > 1]
        base = self.structure.sample(1)[0]
        if not multi:
            grad_w = probs[0].new_zeros(1, num_groups)
            grad_w[0, single] = 1.0
            return base[None], probs[0].new_ones(1), grad_w
        rows, weights = [], []
        n_edges = len(multi)
        for e in multi:
            p = probs[e]
            # value sum_l q_e(l) ll(l) / n_edges; gradient in q_e scaled by n_edges, so that the
            # average over edges keeps each q_e's local-expectation gradient whole
            w = (n_edges * p - (n_edges - 1) * p.detach()) / n_edges
            for l in range(len(p)):
                row = base.clone()
                row[e] = l
                rows.append(row)
            weights.append(w)
        choices = torch.stack(rows)
        value = torch.cat(weights)
        grad_w = value.new_zeros(choices.shape[0], num_groups)
        own = torch.cat([torch.arange(k) + self._group_offsets[e] for e, k in enumerate(sizes)
                         if k > 1]).to(choices.device)
        grad_w[torch.arange(choices.shape[0]), own] = 1.0
        if single:
            grad_w[:, single] = value.detach()[:, None]
        return choices, value, grad_w

    def log_likelihoods(self, x: Tensor, y: Tensor, weights: Tensor, choices: Tensor,
                        num_data: int | None = None, weight_rows: Tensor | None = None) -> Tensor:
        """log p(y | X, W_s, s) for every row of ``choices`` (S, E), plate-scaled to ``num_data``;
        ``weights`` is one flat W (P,), one per structure (S, P), or R rows that
        ``weight_rows`` (S,) assign to the structures.  One flat W (or ``weight_rows``) takes the
        shared computation of :func:`bnas_pyro.supernet_structures.forward_structures`; one W per
        structure its own weight row there too where the space takes the fused plan (only the
        pairs the structures choose are computed), else a vectorised supernet pass per
        structure.  On a CPU the rows go in passes of at most :data:`_CACHE_ROWS` structures x
        rows, whose sums add up."""
        model = self.model
        rows = x.shape[0]
        ll = None
        for a, b in _passes(rows, choices.shape[0], x.device):   # the sums over rows add up
            f = self._outputs(x[a:b], weights, choices, weight_rows)
            part = model.likelihood.structure_log_probs(model, f, y[a:b])
            ll = part if ll is None else ll + part
        scale = 1.0 if num_data is None else float(num_data) / rows
        return ll * scale

    def _outputs(self, x: Tensor, weights: Tensor, choices: Tensor,
                 weight_rows: Tensor | None = None) -> Tensor:
        """f(x; W_s, s) for every row of ``choices``, shape (S, batch, *out) (``weights`` and
        ``weight_rows`` as in :meth:`log_likelihoods`)."""
        own_rows = weights.dim() == 2 and weight_rows is None and self._fusable
        if own_rows:   # structure i reads weight row i
            weight_rows = torch.arange(choices.shape[0], device=choices.device)
        if weights.dim() == 1 or weight_rows is not None:
            return forward_structures(self.model.supernet, x, weights,
                                      plan=self._plan_of(choices, weight_rows, x.device, own_rows))
        return self.forward_structures(x, weights, choices)

    @torch.no_grad()
    def structure_mixture(self, xs: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]] | None:
        """One draw of the predictive as an exact mixture over a joint q(s)'s support:

            p(y | x, W) = sum_s q(s) p(y | x, W_s, s),   W ~ prod_g q_g (W_s: structure s's groups)

        returns (log q(s) (S,), [f(x; W_s, s) (S, rows, *out) for each x of ``xs``]), one weight
        draw shared by all of ``xs`` (chunks of one input).  Each structure reads only its own
        groups, so this draw has, for every s, the law of q(W | s); summing s out exactly removes
        the Monte Carlo error of drawing it (:func:`bnas_pyro.analysis.metrics.posterior_predictive`
        averages such draws).  ``None`` for a factorised q(s), whose support is not enumerated.
        """
        if not self.joint:
            return None
        choices = self.structure.choices
        weights = self.sample_weights()
        outputs = [torch.cat([self._outputs(x[a:b], weights, choices)
                              for a, b in _passes(x.shape[0], choices.shape[0], x.device,
                                                  _MIXTURE_ROWS)], 1)
                   for x in xs]
        return self.structure.log_probs(), outputs

    def _plan_of(self, choices: Tensor, weight_rows: Tensor | None, device,
                 own_rows: bool = False) -> StructurePlan:
        """The :class:`~bnas_pyro.supernet_structures.StructurePlan` of these structures, kept
        for the joint support (the same every step; ``own_rows``: structure i reads weight row i)
        and for the last few factorised draws."""
        if self.joint and choices is self.structure.choices and (weight_rows is None or own_rows):
            key = ("support", own_rows, str(device))   # no copy to the host on an accelerator
        else:
            key = (torch.cat([choices.reshape(-1), torch.tensor([-1], device=choices.device)]
                             + ([] if weight_rows is None else [weight_rows.reshape(-1)]))
                   .cpu().numpy().tobytes(), choices.shape, str(device))
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_structures(self.model.supernet, choices, weight_rows).to(device)
            if len(self._plans) >= _KEPT_PLANS:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        return plan

    def forward_structures(self, x: Tensor, weights: Tensor, choices: Tensor) -> Tensor:
        """f(x; W_s, s) for every structure, shape (S, batch, *out), vectorised over the
        structures with ``torch.func.vmap`` (gamma^e one-hot)."""
        supernet = self.model.supernet
        sizes = self.structure.edge_sizes
        S = choices.shape[0]
        if weights.dim() == 1:
            weights = weights.expand(S, -1)
        gammas = [None if k == 1 else nn.functional.one_hot(choices[:, e], k).to(x.dtype)
                  for e, k in enumerate(sizes)]
        multi = [e for e, k in enumerate(sizes) if k > 1]

        def one(w, *g):
            full = [None] * len(sizes)
            for e, ge in zip(multi, g):
                full[e] = ge
            return supernet(x, w, full)

        return torch.func.vmap(one)(weights, *[gammas[e] for e in multi])

    def objective_terms(self, x: Tensor, y: Tensor | None = None,
                        num_data: int | None = None) -> ElboTerms:
        """One draw of the bound's terms: E_q log p(y | W, s) (exact sum over s for a joint q,
        local expectations for a factorised one), sum_g P_q(g in s) KL_g and KL(q(s) || p(s))."""
        if y is None:
            raise ValueError("StructuredGuide.objective_terms needs the targets y")
        log_q = self.structure.log_probs() if self.joint else None
        choices, w, grad_w = self._structures_to_evaluate(log_q)
        q_support = w if self.joint else None   # a joint q's q(s) (before the floor below)
        scale = self.scale
        weights = self.sample_weights(scale)
        rows = None
        if self.precondition:
            # the value weight floored at _TINY (a bias below 1e-25); the gradient into q_g from
            # structure s rescaled from q(s) to grad_w[s, g]: q(s | g in s) for a joint q, i.e. one
            # scale 1 / P_q(g in s) per group; 1 for weights per structure (each q(W | s) fitted
            # as if s were chosen); for a factorised q one scale vector per edge e, shared by the
            # rows (e, l) (their own group whole, the other edges' groups none)
            w = w.clamp_min(_TINY)
            if torch.is_grad_enabled():   # the rescaling changes gradients only, not values
                index = self.model.supernet.group_index
                if self.per_structure:
                    per = (1.0 / w.detach())[:, None]
                elif self.joint:
                    per = (grad_w / w.detach()[:, None]).amax(0).index_select(0, index)
                else:
                    rows, scales = self._factorised_scales(choices, grad_w / w.detach()[:, None])
                    per = scales[:, index]
                weights = weights.detach() + (weights - weights.detach()) * per
        ll = self.log_likelihoods(x, y, weights, choices, num_data, rows)
        self._num_data = int(x.shape[0] if num_data is None else num_data)
        self._batch_rows = int(x.shape[0])
        kls = self.group_kls(scale=scale)
        # log q(s) and log p(s | m) over a joint support, shared by the natural gradient and the KL
        logs = (log_q, self._support_prior_log_probs()) if self.joint else None
        if torch.is_grad_enabled():   # averaged over the draws of one step (num_particles)
            r = self._natural_gradient(choices, ll.detach(), kls.detach(), logs)
            self._natural = r if self._natural is None else self._natural + r
            self._natural_count += 1
        if self.per_structure:
            # sum_s q(s) KL(q(W | s) || p(W | h)); preconditioned, each q(W | s) gets the gradient
            # of its own KL whole, while the precisions keep the q(s)-weighted gradient
            q = w
            kl_s = self.structure_weight_kls(kls, choices, self._all_rows(choices))
            kl_w = (q * kl_s).sum()
            if self.precondition:
                own = self.structure_weight_kls(self.group_kls(detach_prior=True), choices,
                                                self._all_rows(choices))
                kl_w = kl_w + ((1 - q.detach()) * (own - own.detach())).sum()
        elif self.precondition:
            p_group = self.group_probabilities(q_support)
            kl_w = (p_group * kls.detach()).sum() + (kls - kls.detach()).sum()
        else:
            kl_w = (self.group_probabilities(q_support) * kls).sum()
        return ElboTerms((w * ll).sum(), kl_w, self.structure_kl(logs, q_support))

    def _factorised_scales(self, choices: Tensor, per: Tensor) -> tuple[Tensor, Tensor]:
        """The rows (e, l) of a factorised draw share one gradient-scale vector per edge e
        (row (e, l)'s scale of group (e, l') is 0 for l' != l, and that group is not read):
        (which vector each row takes (S,), the vectors (R, num_groups))."""
        sizes = [k for k in self.structure.edge_sizes if k > 1]
        if not sizes:
            return torch.zeros(choices.shape[0], dtype=torch.long, device=choices.device), per
        rows = torch.repeat_interleave(torch.arange(len(sizes), device=choices.device),
                                       torch.tensor(sizes, device=choices.device))
        # scatter_reduce, not index_reduce (the same maxima; torch warns that the latter is beta)
        scales = per.new_zeros(len(sizes), per.shape[1]).scatter_reduce(
            0, rows[:, None].expand_as(per), per, "amax", include_self=True)
        return rows, scales

    def _all_rows(self, choices: Tensor) -> Tensor:
        """Rows of a joint q's own enumeration (``choices`` is ``structure.choices``)."""
        return torch.arange(choices.shape[0], device=choices.device)

    @torch.no_grad()
    def _natural_gradient(self, choices: Tensor, ll: Tensor, kls: Tensor,
                          joint_log_probs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """r = the natural gradient of the (c_reg-scaled) bound in q(s)'s logits, up to a constant
        per block, from this draw's log-likelihoods (:class:`NaturalStructureOptimizer`):
        joint: r_s = ll_s - c_reg (sum_{g in s} KL_g + log q(s) - log p(s));
        factorised, row (e, l): the same with the local expectation given s_e = l, edge e's terms;
        with a structure temperature t > 1 (:meth:`NaturalStructureOptimizer.temperature`) the
        data terms ll_s - c_reg sum_{g in s} KL_g are divided by t."""
        c = self._c_reg
        t = self._temperature
        if self.joint:
            log_q, log_p = joint_log_probs or (self.structure.log_probs(),
                                               self._support_prior_log_probs())
            kl_s = self.structure_weight_kls(kls, choices,
                                             None if kls.dim() == 1 else self._all_rows(choices))
            # the multiplications by 1 left out (c_reg is 1 in evidence mode, t once annealed)
            data = ll - kl_s if c == 1.0 else ll - c * kl_s
            data = data if t == 1.0 else data / t
            return data - (log_q - log_p) if c == 1.0 else data - c * (log_q - log_p)
        prior = self._prior_log_probs()
        out = []
        row = 0
        for e, k in enumerate(self.structure.edge_sizes):
            lq = torch.log_softmax(self.structure.edge_logits(e), -1)
            if k == 1:
                out.append(lq.new_zeros(1))
                continue
            g = torch.arange(k, device=lq.device) + self._group_offsets[e]
            out.append((ll[row:row + k] - c * kls[g]) / t - c * (lq - prior[e]))
            row += k
        return torch.cat(out)

    def set_coefficients(self, coefficients) -> None:
        """The hook the loops call: c_reg scales the KL in the natural gradient of q(s)."""
        self._c_reg = float(coefficients.c_reg)

    @torch.no_grad()
    def structure_elbos(self, x: Tensor, y: Tensor, choices: Tensor | None = None,
                        num_draws: int = 64, batch: int = 16) -> tuple[Tensor, Tensor]:
        """(ELBO_s, its standard error) for every row of ``choices`` (default: every structure of a
        joint q) at the current q_g and h: ``num_draws`` weight draws shared by the structures."""
        if choices is None:
            if not self.joint:
                raise ValueError("a factorised q(s) needs explicit choices")
            choices = self.structure.choices
        rows = self._rows_of(choices) if self.per_structure else None
        kl_s = self.structure_weight_kls(self.group_kls(), choices, rows)
        draws = []
        for _ in range(num_draws):
            w = self.sample_weights()
            parts = [self.log_likelihoods(x, y, w if rows is None else w[rows[i:i + batch]],
                                          choices[i:i + batch])
                     for i in range(0, choices.shape[0], batch)]
            draws.append(torch.cat(parts))
        ll = torch.stack(draws)
        return ll.mean(0) - kl_s, ll.std(0) / num_draws**0.5

    # ------------------------------------------------------------------ as a Pyro guide
    def forward(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> None:
        """One draw s ~ q(s), W ~ q(W | s) as the model's sites: ``gamma[EDGE]`` holds log one-hot
        (``ABSENT_LOG_GAMMA`` off the choice), ``weights`` the draw, with the absent groups from the
        prior.  For predictive sampling and traces; the bound itself is :meth:`objective_terms`."""
        s = self.structure.sample(1)[0]
        for e, edge in enumerate(self.model.space.edges):
            if len(edge) == 1:
                continue
            value = torch.full((len(edge),), ABSENT_LOG_GAMMA, dtype=self.loc.dtype,
                               device=self.loc.device)
            value[s[e]] = 0.0
            pyro.sample(structure_site(edge.name), dist.Delta(value, event_dim=1),
                        infer=dict(STRUCTURE_ROLE))
        pyro.sample(WEIGHT_SITE, self.weight_distribution(s))

    def weight_distribution(self, s: Tensor):
        """q(W | s): q_g on the groups of s, the prior N(0, A^{-1}) on the others (a diagonal
        Normal for ``mean_field``, a block-diagonal MultivariateNormal for ``full_rank``)."""
        present = torch.zeros(self.model.layout.num_groups, dtype=torch.bool, device=self.loc.device)
        present[self._groups_of(s[None])[0]] = True
        mask = present[self.model.supernet.group_index]
        prior_scale = self.model.hyper.precision_per_parameter().rsqrt()
        row = int(self._rows_of(s.reshape(1, -1))[0]) if self.per_structure else None
        own_loc = self.loc if row is None else self.loc[row]
        scale = self.scale if row is None else self.scale[row]
        loc = torch.where(mask, own_loc, torch.zeros_like(own_loc))
        if self.weights_family == "mean_field":
            return dist.Normal(loc, torch.where(mask, scale, prior_scale)).to_event(1)

        def tril(g):
            a, b = self._group_bounds[g]
            off = self.offdiag[g] if row is None else self.offdiag[g][row]
            return off.tril(-1) + torch.diag_embed(scale[a:b])

        blocks = [tril(g) if present[g] else torch.diag_embed(prior_scale[a:b])
                  for g, (a, b) in enumerate(self._group_bounds)]
        return dist.MultivariateNormal(loc, scale_tril=torch.block_diag(*blocks))

    def weight_mean(self) -> Tensor:
        """E_q[W | g in s] (the posterior-mean weights of a chosen primitive); with weights per
        structure, E_q[W | s] at the most probable structure s."""
        if self.per_structure:
            return self.loc.detach()[int(self.structure_probabilities().argmax())]
        return self.loc.detach()

    # ------------------------------------------------------------------ the optimiser hook
    def wrap_optimizer(self, optimizer) -> "NaturalStructureOptimizer":
        """The hook :class:`~bnas_pyro.InnerLoop` and the search call on their optimiser of theta:
        q(s) then moves by natural-gradient steps instead (:class:`NaturalStructureOptimizer`)."""
        if isinstance(optimizer, NaturalStructureOptimizer):
            return optimizer
        return NaturalStructureOptimizer(self, optimizer, self.structure_lr)


class NaturalStructureOptimizer(WrappedOptimizer):
    """Moves q(s)'s logits by stochastic natural-gradient steps; everything else by ``base``.

    For a categorical q with logits eta (one block per edge, or one joint block), the gradient of
    the bound is q_s (r_s - sum_t q_t r_t) with r_s = ELBO_s + log p(s) - log q(s) (joint; per edge
    the same with local expectations), and the Fisher information is diag(q) - q q^T, so the
    natural gradient is r_s up to a constant.  The step eta <- eta + rho * grad / q is therefore

        eta <- (1 - rho) eta + rho (ELBO_s + log p(s))         (up to a constant per block),

    a running average of the fixed point q(s) proportional to p(s) exp(ELBO_s) (Hoffman, Blei,
    Wang and Paisley 2013, stochastic variational inference).  Adam on the logits, by contrast,
    normalises the gradient coordinate by coordinate: measured on the polynomial problem, its
    q(s) wandered 0.3-0.9 in total variation from the exact posterior although every ELBO_s was
    within 0.4 nats of its evidence.  rho is ``structure_lr`` times the ratio of the base
    optimiser's current step size to its first one (so step-size schedules also anneal rho).
    Quacks like ``torch.optim.Optimizer`` (``param_groups``, ``state``, ``zero_grad``, ``step``,
    ``state_dict``).
    """

    def __init__(self, guide: StructuredGuide, base: torch.optim.Optimizer, structure_lr: float):
        super().__init__(base)
        self.guide = guide
        logits = guide.structure.logits
        for group in base.param_groups:
            group["params"] = [p for p in group["params"] if p is not logits]
        self.structure_lr = float(structure_lr)
        self._lr0 = float(base.param_groups[0]["lr"]) if base.param_groups else 1.0
        self.steps = 0
        self.parallel = None

    def set_parallel(self, parallel) -> None:
        """Run data-parallel: each step first takes the mean of the ranks' natural gradients,
        weighted by their shard sizes (one all-reduce), so every rank moves q(s) alike."""
        self.parallel = parallel

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        logits = self.guide.structure.logits
        if set_to_none:
            logits.grad = None
        elif logits.grad is not None:
            logits.grad.zero_()

    def temperature(self) -> float:
        """t of the next step: t0^(1 - u) with u = (steps - warm-up) / anneal steps in [0, 1], so
        t falls geometrically from t0 (``initial_temperature``, default the number of data, which
        puts the ELBO differences on a per-datum scale) to 1; 1 without annealing."""
        guide = self.guide
        if guide.anneal_steps <= 0:
            return 1.0
        t0 = guide.initial_temperature or float(max(getattr(guide, "_num_data", 1), 1))
        u = min(max((self.steps - guide.warmup_steps) / guide.anneal_steps, 0.0), 1.0)
        return float(t0 ** (1.0 - u))

    def rho(self) -> float:
        if self.steps < self.guide.warmup_steps:
            return 0.0
        lr = float(self.base.param_groups[0]["lr"]) if self.base.param_groups else self._lr0
        return self.structure_lr * (lr / self._lr0 if self._lr0 > 0 else 1.0)

    def after_step(self) -> None:
        logits = self.guide.structure.logits
        natural = self.guide._natural
        rho = self.rho()
        self.steps += 1
        self.guide._temperature = self.temperature()
        if natural is not None and logits.requires_grad and rho > 0:
            natural = natural / max(self.guide._natural_count, 1)
            if self.parallel is not None:
                # the global batch's estimate: the ranks' shard estimates weighted by shard size
                rows = natural.new_tensor([float(self.guide._batch_rows)])
                total, size = self.parallel.average([natural * rows, rows])
                natural = total / size
            with torch.no_grad():
                logits.add_(rho * natural)
                if self.guide.joint:
                    logits.sub_(logits.max())
                else:
                    for e, k in enumerate(self.guide.structure.edge_sizes):
                        block = self.guide.structure._starts[e]
                        logits[block:block + k] -= logits[block:block + k].max()
        self.guide._natural, self.guide._natural_count = None, 0

    def state_dict(self) -> dict:
        """The base optimiser's state, the step count and the schedule's state, and the natural
        gradient gathered since the last step (e.g. by an outer step's draws): a resumed search
        continues exactly."""
        g = self.guide
        return {"base": self.base.state_dict(), "lr0": self._lr0, "steps": self.steps,
                "temperature": g._temperature, "num_data": getattr(g, "_num_data", None),
                "batch_rows": getattr(g, "_batch_rows", None), "natural": g._natural,
                "natural_count": g._natural_count}

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state["base"])
        self._lr0 = float(state["lr0"])
        self.steps = int(state.get("steps", 0))
        g = self.guide
        g._temperature = float(state.get("temperature", 1.0))
        for key in ("num_data", "batch_rows"):
            if state.get(key) is not None:
                setattr(g, f"_{key}", int(state[key]))
        natural = state.get("natural")
        g._natural = None if natural is None else natural.to(g.structure.logits)
        g._natural_count = int(state.get("natural_count", 0))


__all__ = ["ABSENT_LOG_GAMMA", "DiscreteStructure", "NaturalStructureOptimizer", "StructuredGuide"]
