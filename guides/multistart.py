"""Multistart guide: gradient descent as variational inference (METHOD.md section 3).

q(W) is the distribution of the weights after tau gradient steps started from k random points
W^1_0..W^k_0 drawn from a known q_0 = N(mu_0, diag sigma_0^2) with entropy S_0 in closed form
(Bakhteev 2016; Maclaurin, Duvenaud & Adams 2016).  Each step W_{t+1} = W_t - beta grad L(W_t) has
Jacobian I - beta H (H the Hessian of the loss L = -log p(y, W | X, h) at W_t), so

    S_{t+1} = S_t + E_{q_t} log|I - beta H|,      log|I - beta H| >= -beta Tr H - beta^2 Tr(HH),

    ELBO(q_tau) ~= (1/k) sum_r log p(y, W^r_tau | X, h) + S_tau.

The expectation is estimated by the probe of :func:`bnas_pyro.entropy.log_det_probe` at each
restart, averaged over the restarts and ACCUMULATED over the steps.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn
from torch.distributions import Distribution, register_kl

from bnas_pyro.entropy import (StepSizeError, StepSizeWarning, gaussian_entropy, log_det_probe,
                               power_iteration, step_size_message, step_size_violated)
from bnas_pyro.inference import MinibatchSampler
from bnas_pyro.models.weight_priors import WEIGHT_SITE
from bnas_pyro.objectives import ElboTerms, trace_terms

from .optimizer_wrapper import WrappedOptimizer
from .structure import ConcreteStructureGuide

OnViolation = Literal["raise", "warn", "ignore"]


class MultistartPoint(dist.Delta):
    """The guide's weight site: a point mass at one restart's weights W^r_t, log density -S_t.

    ``log_prob(W^r_t) = -S_t``, so a Monte Carlo ELBO over a uniformly chosen restart r,
    E_r[log p(y, W^r_t) - log q] = (1/k) sum_r log p(y, W^r_t) + S_t, is the multistart ELBO of
    METHOD.md section 3, in :func:`bnas_pyro.objectives.trace_terms` and in Pyro's ``Trace_ELBO``
    alike.  (Pyro's registered ``KL(Delta || p) = -log p(v)`` ignores ``log_density``; this class
    registers ``KL = log_density - log p(v)`` so the entropy is not dropped silently.)
    """


def _kl_multistart_point(p: MultistartPoint, q: Distribution) -> Tensor:
    return p.log_density - q.log_prob(p.v)


# Pyro registers KL(Delta || pyro Distribution); registering against both bases makes this rule
# the unambiguous most specific one for Pyro and plain torch priors alike.
register_kl(MultistartPoint, Distribution)(_kl_multistart_point)
register_kl(MultistartPoint, dist.Distribution)(_kl_multistart_point)


@dataclass(frozen=True)
class MultistartRecord:
    """One gradient step of :class:`MultistartGuide`, measured at W_t before the step.

    Attributes:
        step: t.
        log_joint: (1/k) sum_r [log p(y|X, W^r_t, Gamma) + c_reg log p(W^r_t | Gamma, h)] on the
            batch the step used (plate-scaled to the full data).
        entropy: S_t (before this step's increment).
        entropy_increment: the probe estimate of E log|I - beta H| added at this step.
        increment_se: its standard error over the restarts and probes.
        lambda_max: the largest power-iteration |eigenvalue| over the restarts, on steps where the
            step size was checked, else ``None``.
    """

    step: int
    log_joint: float
    entropy: float
    entropy_increment: float
    increment_se: float
    lambda_max: float | None = None

    @property
    def elbo(self) -> float:
        """log_joint + S_t: the ELBO of q_t when c_reg = 1, the batch is the full data and no
        edge has a structure choice (otherwise the weight part of it)."""
        return self.log_joint + self.entropy


class MultistartGuide(nn.Module):
    """q(W) = law of tau gradient-descent steps from k random starts; q(Gamma) Concrete (METHOD.md s. 3).

    Initial distribution q_0 = N(init_loc, diag init_scale^2), entropy
    S_0 = sum_i [1/2 log(2 pi e) + log sigma_0,i].  :meth:`step` moves every restart by
    W^r_{t+1} = W^r_t - beta grad_W L(W^r_t) with

        L(W) = -[log p(y | X, W, Gamma) + c_reg log p(W | Gamma, h)]     (Gamma ~ q(Gamma) per restart)

    and accumulates S_{t+1} = S_t + (1/k) sum_r r0^T(-2 r0 + 3 r1 - r2) with r0 ~ N(0, I),
    r1 = r0 - beta H r0, r2 = r1 - beta H r1 (H = Hessian of L at W^r_t by double backward):
    an unbiased estimate of -beta Tr H - beta^2 Tr(HH), the lower bound on log|I - beta H|.
    The estimate is computed with one Hessian-vector product per probe (``r0^T H^2 r0 =
    |H r0|^2``, see :func:`~bnas_pyro.entropy.log_det_probe`); ``literal_probe=True`` uses the two.

    Note (a bug in the thesis pseudocode): there the entropy variable is *assigned* the step's
    estimate at every iteration, so only the last step's log|I - beta H| survives.  The entropy
    after tau steps is S_0 plus the *sum* of the increments; this guide accumulates it.

    ELBO (usable as Q by an outer loop, :meth:`elbo_terms`):

        ELBO ~= (1/k) sum_r log p(y, W^r_tau | X, h) + S_tau   [- KL(q(Gamma) || p(Gamma|h))].

    The estimate is biased low by the second-order bound (by about beta^2 Tr(HH)/2 per step; small
    when beta lambda_max << 1).  With minibatches or a sampled structure each step is a random map
    independent of W, and the entropy of the resulting mixture is at least the average, so the
    estimate stays a lower bound.

    As a Pyro guide of :class:`~bnas_pyro.models.BayesianSupernet` it samples the structure sites
    from a :class:`ConcreteStructureGuide` and the ``"weights"`` site as a
    :class:`MultistartPoint` at one restart chosen uniformly (an auxiliary choice, not a site), so
    ``trace_terms``/``ScaledELBO``/``estimate_elbo``/``pyro.infer.Trace_ELBO`` all estimate the
    ELBO above.  The k points are buffers, not parameters: an optimiser over ``parameters()``
    (Adam in :class:`~bnas_pyro.InnerLoop`) moves only q(Gamma); the weights move by :meth:`step`
    (or by :meth:`optimizer_factory` inside an ``InnerLoop``).  Gradients of the ELBO with respect
    to h hold the trajectory (W^r_tau, S_tau) fixed.

    :class:`~bnas_pyro.InnerLoop` and :class:`~bnas_pyro.search.bilevel.BilevelSearch` (strategies
    ``joint``, ``greedy``, ``hoag``, ``random``) wrap their optimiser of theta through
    :meth:`wrap_optimizer`, so every inner step also takes one descent step on the restarts.
    ``unrolled`` and ``drmad`` differentiate through their own gradient ascent on
    ``guide.parameters()`` and never call the optimiser, so the restarts would not move: the search
    refuses that pairing.  The inner loss uses
    ``guide.c_reg``, which InnerLoop and BilevelSearch keep equal to their coefficients' c_reg
    through :meth:`set_coefficients`.

    Step-size check: every ``check_every`` steps (and at the first) the dominant Hessian eigenvalue
    of every restart is estimated by warm-started power iteration on Hessian-vector products; if
    beta * lambda_max > 0.68 the second-order entropy bound fails (log(1-b) >= -b-b^2 only up to
    b = 0.684: METHOD.md section 3's beta < 1/lambda_max(H) is too loose), and if beta * |lambda|
    >= 1 so does beta < 1/C.  Default: raise :class:`~bnas_pyro.entropy.StepSizeError` naming beta and the
    estimated lambda_max, because past it the entropy bound and the descent both fail and the
    ELBO is meaningless; ``on_violation="warn"`` warns (:class:`StepSizeWarning`) and goes on.

    Args:
        model: the :class:`~bnas_pyro.models.BayesianSupernet` (not registered as a submodule).
        num_restarts: k.
        step_size: beta, the gradient-descent step.
        init_scale: sigma_0, a number or a (P,) tensor; ``None``: the layout's Glorot-like
            per-parameter scale (the same as the other guides' initial means).
        init_loc: mu_0 (default 0).
        c_reg: the KL weight of the inner objective L (METHOD.md section 4); 1 is the ELBO.
        num_probes: probes r0 per restart per step (more: lower variance of S).
        probe: ``"gaussian"`` (r0 ~ N(0, I), METHOD.md) or ``"rademacher"`` (also unbiased).
        literal_probe: compute the probe with the two Hessian-vector products of METHOD.md.
        check_every: steps between step-size checks (0: only at the first step; None: never).
        power_iters: at most this many power iterations per check.
        power_tol: relative tolerance that ends a check's power iteration early (warm-started
            from the previous check's eigenvectors, a few products usually suffice).
        on_violation: ``"raise"`` (default), ``"warn"`` or ``"ignore"``.
        vectorize: evaluate the k restarts with ``torch.func.vmap`` (validated against a loop on
            first use, falling back to the loop if the model cannot be vmapped).
        temperature, learn_temperature, init_logits: of the Concrete q(Gamma)
            (:class:`ConcreteStructureGuide`).
        generator: seeds the k initial points (the probes use the global RNG).

    Attributes:
        points: (k, P) buffer, W^1_t..W^k_t.
        entropy: 0-d buffer, S_t.
        initial_entropy: S_0.
        history: a :class:`MultistartRecord` per step.
    """

    couples_weights_to_structure = False

    def __init__(self, model, num_restarts: int = 10, step_size: float = 1e-3,
                 init_scale: float | Tensor | None = None, init_loc: Tensor | None = None,
                 c_reg: float = 1.0, num_probes: int = 1,
                 probe: Literal["gaussian", "rademacher"] = "gaussian",
                 literal_probe: bool = False, check_every: int | None = 50, power_iters: int = 30,
                 power_tol: float = 1e-3, on_violation: OnViolation = "raise", vectorize: bool = True,
                 temperature: float | None = None, learn_temperature: bool = False,
                 init_logits: Tensor | None = None, generator: torch.Generator | None = None):
        super().__init__()
        object.__setattr__(self, "model", model)
        if int(num_restarts) != num_restarts or num_restarts < 1:
            raise ValueError(f"num_restarts must be a positive integer, got {num_restarts!r}")
        if not (step_size > 0 and math.isfinite(step_size)):
            raise ValueError(f"step_size (beta) must be a finite number > 0, got {step_size!r}")
        if int(num_probes) != num_probes or num_probes < 1:
            raise ValueError(f"num_probes must be a positive integer, got {num_probes!r}")
        if probe not in ("gaussian", "rademacher"):
            raise ValueError(f"probe must be 'gaussian' or 'rademacher', got {probe!r}")
        if on_violation not in ("raise", "warn", "ignore"):
            raise ValueError(f"on_violation must be 'raise', 'warn' or 'ignore', got {on_violation!r}")
        if c_reg < 0:
            raise ValueError(f"c_reg must be >= 0, got {c_reg}")
        self.num_restarts = int(num_restarts)
        self.step_size = float(step_size)
        self.c_reg = float(c_reg)
        self.num_probes = int(num_probes)
        self.probe = probe
        self.literal_probe = bool(literal_probe)
        self.check_every = check_every
        self.power_iters = int(power_iters)
        self.power_tol = float(power_tol)
        self.on_violation = on_violation
        self.vectorize = bool(vectorize)
        self.structure = ConcreteStructureGuide(model, temperature, learn_temperature, init_logits)

        ref = model.hyper.log_precision
        P = model.layout.num_parameters
        scale = (model.layout.init_std if init_scale is None
                 else torch.as_tensor(init_scale, dtype=torch.float64).expand(P))
        if not bool((scale > 0).all()):
            raise ValueError("init_scale must be > 0")
        loc = torch.zeros(P) if init_loc is None else torch.as_tensor(init_loc).detach()
        if loc.shape != (P,):
            raise ValueError(f"init_loc must have shape ({P},), got {tuple(loc.shape)}")
        self.register_buffer("init_loc", loc.to(ref.dtype).to(ref.device).clone())
        self.register_buffer("init_scale", scale.to(ref.dtype).to(ref.device).clone())
        self.register_buffer("points", torch.empty(self.num_restarts, P, dtype=ref.dtype,
                                                   device=ref.device))
        self.register_buffer("entropy", torch.zeros((), dtype=ref.dtype, device=ref.device))
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self._eigvec: Tensor | None = None
        self._vmap_ok: bool | None = None if self.vectorize else False
        self._pinned: int | None = None
        self.last_batch: tuple[Tensor, Tensor | None, int | None] | None = None
        self.history: list[MultistartRecord] = []
        self.reset(generator)

    # ------------------------------------------------------------------ state
    @property
    def initial_entropy(self) -> Tensor:
        """S_0 = entropy of q_0 = N(init_loc, diag init_scale^2), closed form."""
        return gaussian_entropy(self.init_scale)

    @property
    def num_steps(self) -> int:
        """tau, the gradient steps taken since the last :meth:`reset`."""
        return int(self.step_count)

    @property
    def entropy_se(self) -> float:
        """Standard error of S_tau (the probe noise of the accumulated increments)."""
        return math.sqrt(sum(r.increment_se**2 for r in self.history))

    def reset(self, generator: torch.Generator | None = None) -> None:
        """Redraw W^1_0..W^k_0 ~ q_0 and set S back to S_0."""
        eps = torch.randn(self.points.shape, generator=generator, dtype=torch.float64)
        eps = eps.to(self.points.dtype).to(self.points.device)
        with torch.no_grad():
            self.points.copy_(self.init_loc + self.init_scale * eps)
            self.entropy.copy_(self.initial_entropy)
            self.step_count.zero_()
        self._eigvec = None
        self.history = []

    def get_extra_state(self) -> dict[str, Any]:
        """``state_dict`` carries the step records (so a restored guide keeps ``entropy_se``) and
        the power iteration's warm start (so a resumed run draws the same random numbers as an
        uninterrupted one)."""
        return {"history": [tuple(vars(r).values()) for r in self.history],
                "eigvec": None if self._eigvec is None else self._eigvec.detach().clone()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.history = [MultistartRecord(*r) for r in state.get("history", [])]
        eigvec = state.get("eigvec")
        self._eigvec = None if eigvec is None else eigvec.to(self.points)

    def restarts(self) -> Tensor:
        """The k current points W^r_t, shape (k, P) (a detached view)."""
        return self.points.detach()

    def weight_mean(self) -> Tensor:
        """E_q[W] = mean of the k points.  For a network, predict by averaging each restart's
        output instead: restarts in different modes do not average in weight space."""
        return self.points.detach().mean(0)

    # ------------------------------------------------------------------ Pyro guide
    def forward(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> None:
        self.last_batch = (x, y, num_data)
        self.structure()
        if self._pinned is not None:
            r = self._pinned
        else:
            r = int(torch.randint(self.num_restarts, ()))
        pyro.sample(WEIGHT_SITE, MultistartPoint(self.points[r], log_density=-self.entropy,
                                                 event_dim=1))

    @contextmanager
    def pinned(self, restart: int) -> Iterator[None]:
        """Within the block the guide samples restart ``restart`` instead of a uniform one."""
        if not 0 <= restart < self.num_restarts:
            raise IndexError(f"restart {restart} out of range [0, {self.num_restarts})")
        old, self._pinned = self._pinned, int(restart)
        try:
            yield
        finally:
            self._pinned = old

    def elbo_terms(self, x: Tensor, y: Tensor | None = None,
                   num_data: int | None = None) -> ElboTerms:
        """:class:`~bnas_pyro.ElboTerms` averaged exactly over the k restarts.

        ``elbo`` = (1/k) sum_r log p(y, W^r_t | X, h) + S_t - KL(q(Gamma) || p(Gamma|h)) (one
        structure draw per restart); ``kl_weights`` = -S_t - (1/k) sum_r log p(W^r_t | h).
        Differentiable in h (and q(Gamma)) with the trajectory held fixed: plug ``terms.outer(c)``
        in as Q.
        """
        total = None
        for r in range(self.num_restarts):
            with self.pinned(r):
                t = trace_terms(self.model, self, x, y, num_data)
            total = t if total is None else total + t
        return total / self.num_restarts

    def elbo(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> float:
        """The multistart ELBO estimate (1/k) sum_r log p(y, W^r | X, h) + S_t, as a float."""
        with torch.no_grad():
            return float(self.elbo_terms(x, y, num_data).elbo)

    def elbo_standard_error(self, x: Tensor, y: Tensor | None = None,
                            num_data: int | None = None) -> float:
        """Standard error of the ELBO estimate: sqrt(Var_r[log p(y, W^r_t)] / k + entropy_se^2).

        The first term is the Monte Carlo error of averaging k restarts (their sample variance),
        the second the accumulated probe noise of S_t.  ``nan`` for a single restart.
        """
        with torch.no_grad():
            log_lik, log_prior = self.log_joint_terms(self.points, x, y, num_data)
        if self.num_restarts < 2:
            return float("nan")
        var = float((log_lik + log_prior).var()) / self.num_restarts
        return math.sqrt(var + self.entropy_se**2)

    # ------------------------------------------------------------------ the loss at k points
    def _sample_structure(self) -> dict[str, Tensor]:
        """One q(Gamma) draw per restart, stacked: {site: (k, K_e)} (detached)."""
        draws = []
        for _ in range(self.num_restarts):
            tr = poutine.trace(self.structure).get_trace()
            draws.append({n: s["value"].detach() for n, s in tr.nodes.items()
                          if s["type"] == "sample"})
        if not draws[0]:
            return {}
        return {n: torch.stack([d[n] for d in draws]) for n in draws[0]}

    def _terms_one(self, w: Tensor, structure: dict[str, Tensor], x: Tensor, y: Tensor | None,
                   num_data: int | None) -> tuple[Tensor, Tensor]:
        """(log p(y | X, w, Gamma), log p(w | Gamma, h)) for one restart, by tracing the model."""
        data = {WEIGHT_SITE: w, **structure}
        trace = poutine.trace(poutine.condition(self.model, data=data)).get_trace(x, y, num_data)
        log_lik = w.new_zeros(())
        log_prior = w.new_zeros(())
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if name in data:
                if name == WEIGHT_SITE:
                    log_prior = scale_and_mask(site["fn"].log_prob(site["value"]),
                                               site["scale"], site["mask"]).sum()
                continue  # structure sites: log p(Gamma | h) does not depend on W
            if not site["is_observed"]:
                raise ValueError(
                    f"MultistartGuide: the model has a latent site {name!r} that the guide does "
                    f"not provide (it handles {WEIGHT_SITE!r} and the structure sites)")
            log_lik = log_lik + scale_and_mask(site["fn"].log_prob(site["value"]),
                                               site["scale"], site["mask"]).sum()
        return log_lik, log_prior

    def _terms_loop(self, W, structure, x, y, num_data):
        out = [self._terms_one(W[r], {n: v[r] for n, v in structure.items()}, x, y, num_data)
               for r in range(W.shape[0])]
        return torch.stack([a for a, _ in out]), torch.stack([b for _, b in out])

    def _terms_vmap(self, W, structure, x, y, num_data):
        def one(w, s):
            return self._terms_one(w, s, x, y, num_data)

        with pyro.validation_enabled(False):
            return torch.func.vmap(one, randomness="error")(W, structure)

    def log_joint_terms(self, W: Tensor, x: Tensor, y: Tensor | None = None,
                        num_data: int | None = None,
                        structure: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Per-row (log-likelihood, log prior of the weights) at the points ``W`` (k, P), shape (k,)
        each; ``structure`` maps structure sites to (k, K_e) log gammas (default: drawn from q)."""
        if structure is None:
            structure = self._sample_structure()
        if self._vmap_ok is None:
            # First use: the plain loop (which also lets PyroModule register its parameters in
            # the param store, something that cannot happen inside vmap), then vmap, compared.
            loop = self._terms_loop(W, structure, x, y, num_data)
            try:
                vm = self._terms_vmap(W, structure, x, y, num_data)
            except Exception as err:  # noqa: BLE001 - a model that cannot be vmapped: use the loop
                self._vmap_ok = False
                self._vmap_error = f"{type(err).__name__}: {err}"
                return loop
            self._vmap_ok = all(
                torch.allclose(a, b, rtol=1e-4, atol=1e-4 * (1 + float(b.detach().abs().max())))
                for a, b in zip(vm, loop))
            if not self._vmap_ok:
                self._vmap_error = "vmap disagreed with the loop"
                warnings.warn("MultistartGuide: vmap over the restarts disagreed with a plain loop; "
                              "using the loop", RuntimeWarning, stacklevel=3)
            return loop
        if self._vmap_ok:
            try:
                return self._terms_vmap(W, structure, x, y, num_data)
            except Exception:  # noqa: BLE001 - e.g. a cleared param store; the loop re-raises real errors
                pass
        return self._terms_loop(W, structure, x, y, num_data)

    # ------------------------------------------------------------------ gradient steps
    def _loss_graph(self, x, y, num_data):
        W = self.points.detach().clone().requires_grad_(True)
        log_lik, log_prior = self.log_joint_terms(W, x, y, num_data)
        target = log_lik + self.c_reg * log_prior
        (grad,) = torch.autograd.grad(-target.sum(), W, create_graph=True)

        def hvp(v: Tensor) -> Tensor:
            (out,) = torch.autograd.grad(grad, W, v, retain_graph=True)
            return out

        return W, target.detach(), grad, hvp

    def _draw_probe(self) -> Tensor:
        r0 = torch.randn(self.points.shape, dtype=self.points.dtype, device=self.points.device)
        return r0.sign() if self.probe == "rademacher" else r0

    def lambda_max(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None,
                   num_iters: int = 100, tol: float = 1e-6) -> Tensor:
        """Power-iteration estimate of each restart's dominant Hessian eigenvalue, shape (k,).

        The Hessian is that of L = -[log p(y|X,W,Gamma) + c_reg log p(W|Gamma,h)] at the current
        points; for a convex loss the dominant eigenvalue is lambda_max.  Typical use: set
        ``guide.step_size = fraction / float(guide.lambda_max(x, y).abs().max())`` before running.
        """
        _, _, _, hvp = self._loss_graph(x, y, num_data)
        lam, self._eigvec = power_iteration(hvp, self._power_start(), num_iters, tol)
        return lam

    def _power_start(self) -> Tensor:
        v = self._eigvec
        if v is None or v.shape != self.points.shape or v.dtype != self.points.dtype \
                or v.device != self.points.device:
            return self._draw_probe()
        return v

    def _check(self, hvp, where: str) -> float:
        lam, self._eigvec = power_iteration(hvp, self._power_start(), self.power_iters,
                                            self.power_tol)
        worst = int(lam.abs().argmax())
        value = float(lam[worst])
        if step_size_violated(self.step_size, value) and self.on_violation != "ignore":
            msg = step_size_message(self.step_size, value, f" at step {where}, restart {worst}")
            if self.on_violation == "raise":
                raise StepSizeError(msg)
            warnings.warn(msg, StepSizeWarning, stacklevel=3)
        return abs(value)

    def check_step_size(self, x: Tensor, y: Tensor | None = None,
                        num_data: int | None = None) -> float:
        """Check beta < 1/lambda_max(H) at the current points now; returns max_r |lambda_r|."""
        _, _, _, hvp = self._loss_graph(x, y, num_data)
        return self._check(hvp, str(self.num_steps))

    def step(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> float:
        """One gradient step on every restart; accumulates S.  Returns the record's ELBO value
        (log joint + S_t at the points before the step)."""
        t = self.num_steps
        W, target, grad, hvp = self._loss_graph(x, y, num_data)
        lam = None
        if self.check_every is not None and (
                t == 0 or (self.check_every > 0 and t % self.check_every == 0)):
            lam = self._check(hvp, str(t))
        estimates = torch.stack([log_det_probe(hvp, self._draw_probe(), self.step_size,
                                               self.literal_probe)
                                 for _ in range(self.num_probes)])  # (probes, k)
        increment = estimates.mean()
        n = estimates.numel()
        se = float(estimates.std() / math.sqrt(n)) if n > 1 else float("nan")
        record = MultistartRecord(t, float(target.mean()), float(self.entropy),
                                  float(increment), se, lam)
        with torch.no_grad():
            self.points.copy_(W.detach() - self.step_size * grad.detach())
            self.entropy.add_(increment.detach())
            self.step_count.add_(1)
        if not bool(torch.isfinite(self.points).all()):
            raise FloatingPointError(
                f"gradient descent diverged at step {t} (beta = {self.step_size:.4g}); lower it")
        self.history.append(record)
        return record.elbo

    def run(self, x: Tensor, y: Tensor | None = None, num_steps: int = 1000,
            batch_size: int | None = None, generator: torch.Generator | None = None,
            restore_best: bool = False, patience: int | None = None,
            callback: Callable[["MultistartGuide"], Any] | None = None) -> list[float]:
        """Up to ``num_steps`` calls of :meth:`step` on seeded minibatches; returns the recorded ELBOs.

        Early stopping by the ELBO (meaningful with full batches and no structure choice):
        ``restore_best=True`` ends at the iterate q_t of highest recorded ELBO; ``patience=n``
        stops once it has not improved for n steps.  Picking the maximum of a noisy estimate biases
        that ELBO upwards by about its noise, ``entropy_se``.
        """
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be a positive number of steps, got {patience}")
        sampler = MinibatchSampler(x, y, batch_size, generator)
        best, best_at, best_state = -math.inf, 0, None
        values: list[float] = []
        for i in range(num_steps):
            xb, yb = next(sampler)
            if restore_best:
                state = (self.points.clone(), self.entropy.clone(), self.step_count.clone(),
                         len(self.history))
            values.append(self.step(xb, yb, sampler.num_data))
            if values[-1] > best:
                best, best_at = values[-1], i
                if restore_best:
                    best_state = state
            if callback is not None:
                callback(self)
            if patience is not None and i - best_at >= patience:
                break
        if restore_best and best_state is not None:
            # the record of a step describes q_t, the state *before* that step
            with torch.no_grad():
                self.points.copy_(best_state[0])
                self.entropy.copy_(best_state[1])
                self.step_count.copy_(best_state[2])
            self.history = self.history[:best_state[3]]
        return values

    # ------------------------------------------------------------------ InnerLoop adapter
    def optimizer_factory(self, base: type[torch.optim.Optimizer] = torch.optim.Adam,
                          **kwargs: Any) -> Callable[[list[dict]], "MultistartOptimizer"]:
        """An ``optimizer_factory`` for :class:`~bnas_pyro.InnerLoop`.

        ``InnerLoop(model, guide, optimizer_factory=guide.optimizer_factory())``: each loop step
        then moves q(Gamma) (and h, with ``train_hyperparameters``) by ``base`` on the ELBO
        gradient, and every restart by one gradient-descent :meth:`step` on the same minibatch.
        """
        return lambda groups: self.wrap_optimizer(base(groups, **kwargs))

    def set_coefficients(self, coefficients) -> None:
        """The hook :class:`~bnas_pyro.InnerLoop` and :class:`~bnas_pyro.BilevelSearch` call
        whenever the coefficients change: the restarts descend on the same L (same c_reg)."""
        self.c_reg = float(coefficients.c_reg)

    def wrap_optimizer(self, optimizer: "torch.optim.Optimizer | MultistartOptimizer") -> "MultistartOptimizer":
        """The hook :class:`~bnas_pyro.InnerLoop` and :class:`~bnas_pyro.BilevelSearch` call on
        their optimiser of theta: each of its steps then also advances the restarts (idempotent)."""
        if isinstance(optimizer, MultistartOptimizer):
            return optimizer
        return MultistartOptimizer(self, optimizer)


class MultistartOptimizer(WrappedOptimizer):
    """Wraps an optimiser of the guide's parameters; ``step()`` also advances the restarts.

    The minibatch is the one the guide last saw (``guide.last_batch``, recorded when the ELBO
    traced it in the same loop step).  Quacks like ``torch.optim.Optimizer`` (``param_groups``,
    ``zero_grad``, ``step``, ``state_dict``).
    """

    def __init__(self, guide: MultistartGuide, base: torch.optim.Optimizer):
        super().__init__(base)
        self.guide = guide

    def after_step(self) -> None:
        if self.guide.last_batch is None:
            raise RuntimeError("MultistartOptimizer.step(): the guide has not been traced on a "
                               "batch yet (run the ELBO on a minibatch first)")
        self.guide.step(*self.guide.last_batch)


__all__ = ["MultistartGuide", "MultistartOptimizer", "MultistartPoint", "MultistartRecord",
           "StepSizeError", "StepSizeWarning"]
