"""Hand-written PyTorch baselines for the speed benchmarks: what a skilled PyTorch user would write.

Both work on a cell given as node sizes and edges ``(source, target, primitives)`` with the dense
primitives ``linear``, ``tanh``, ``relu`` (affine maps), ``identity`` and ``zero``, nodes in
topological order (the first is the input, the last the output, a class-logit vector).

- :class:`LeanBayesStep`: one SVI step on the reparameterised ELBO of the Bayesian supernet
  (METHOD.md sections 2-3) written lean: one flat mean and scale vector, one ``randn`` for all
  weights, the affine primitives of one edge fused into one matmul (``(in, K_aff * out)``), the
  analytic Gaussian KL against N(0, A^{-1}) with one precision per (edge, primitive), the structure
  as a log-space Concrete (one ``rand`` per group of edges with the same number of primitives,
  Gumbel-softmax in log space) with its Monte Carlo KL, a Categorical likelihood scaled to the
  full data, ``backward`` and one Adam step on the variational parameters.
- :class:`LeanDartsStep`: one plain DARTS step (Liu, Simonyan, Yang 2019) on the same supernet:
  point weights (one flat vector), ``softmax(alpha)`` mixing, the same fused forward, the mean
  cross-entropy, ``backward`` and one Adam step on the weights and alpha.

Both step with torch's fused Adam kernel where the installed torch has it for their device (as a
skilled user would ask for), else with the plain Adam.

Neither imports bnas-pyro: they are independent implementations of the same computation.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

AFFINE = ("linear", "tanh", "relu")


def _adam(params, lr: float) -> torch.optim.Optimizer:
    """Adam with ``fused=True``; torch refuses it when building the optimiser where it has no
    fused kernel for the device (the CPU before torch 2.4), and the plain Adam is built then."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.Adam(params, lr=lr)


_ACT = {"linear": None, "tanh": torch.tanh, "relu": torch.relu}


def _class_log_prob(logits: Tensor, y: Tensor) -> Tensor:
    """log softmax(logits)[y] per row, in the fastest form on a CPU: ``cross_entropy`` on small
    batches; from 512 rows with fewer than 16 classes, ``log_softmax`` along the rows of the
    transposed logits (a contiguous class dimension of few entries is slow per row)."""
    if logits.shape[-1] < 16 and logits.shape[0] >= 512:
        return torch.log_softmax(logits.t().contiguous(), 0).gather(0, y[None])[0]
    return -F.cross_entropy(logits, y, reduction="none")


class _Cell:
    """The fused layout: per edge one weight block ``(in, K_aff * out)`` and one bias block."""

    def __init__(self, sizes: dict[str, int], edges: Sequence[tuple[str, str, Sequence[str]]],
                 device, dtype):
        self.sizes, self.nodes = dict(sizes), list(sizes)
        self.edges = [(s, t, list(p)) for s, t, p in edges]
        self.incoming = {n: [e for e, (_, t, _) in enumerate(self.edges) if t == n] for n in self.nodes}
        blocks, init_std, group = [], [], []
        self.affine = []   # per edge: (primitive positions, activations) of its affine primitives
        g = 0
        for s, t, prims in self.edges:
            pos = [l for l, p in enumerate(prims) if p in AFFINE]
            self.affine.append((pos, [_ACT[prims[l]] for l in pos]))
            n_in, n_out, k = sizes[s], sizes[t], len(pos)
            if k:
                blocks += [n_in * k * n_out, k * n_out]
                std = [math.sqrt(2.0 / n_in) if prims[l] == "relu" else 1 / math.sqrt(n_in) for l in pos]
                col_std = torch.tensor(std).repeat_interleave(n_out)
                col_group = torch.arange(g, g + k).repeat_interleave(n_out)
                init_std += [col_std.repeat(n_in), col_std]
                group += [col_group.repeat(n_in), col_group]
            g += len(prims)
        self.blocks = blocks
        self.num_groups = g
        self.init_std = torch.cat(init_std).to(device, dtype)
        self.group_index = torch.cat(group).to(device)
        self.num_parameters = sum(blocks)
        # edges grouped by their number of primitives (K > 1): one Concrete matrix per group
        self.by_k: dict[int, list[int]] = {}
        for e, (_, _, prims) in enumerate(self.edges):
            if len(prims) > 1:
                self.by_k.setdefault(len(prims), []).append(e)

    def forward(self, x: Tensor, w: Tensor, gammas: dict[int, Tensor]) -> Tensor:
        pieces = iter(w.split(self.blocks))
        params = []
        for (s, t, _), (pos, _) in zip(self.edges, self.affine):
            if pos:
                k, n_out = len(pos), self.sizes[t]
                params.append((next(pieces).view(self.sizes[s], k * n_out), next(pieces)))
            else:
                params.append(None)
        values = {self.nodes[0]: x}
        for node in self.nodes[1:]:
            total = None
            for e in self.incoming[node]:
                s, t, prims = self.edges[e]
                h, gamma = values[s], gammas.get(e)
                pos, acts = self.affine[e]
                if pos:
                    W, b = params[e]
                    z = torch.addmm(b, h, W).view(h.shape[0], len(pos), self.sizes[t])
                    outs = [o if a is None else a(o) for o, a in zip(z.unbind(1), acts)]
                    if gamma is None:
                        out = outs[0]
                    else:
                        g = gamma.unbind()
                        out = sum(g[l] * o for l, o in zip(pos, outs))
                else:
                    out = None
                for l, p in enumerate(prims):
                    if p == "identity":
                        g_id = h if gamma is None else gamma.unbind()[l] * h
                        out = g_id if out is None else out + g_id
                if out is not None:
                    total = out if total is None else total + out
            values[node] = total if total is not None else x.new_zeros(x.shape[0], self.sizes[node])
        return values[self.nodes[-1]]


def _concrete_log_prob(value: Tensor, logits: Tensor, t: Tensor) -> Tensor:
    """log density of log gamma under Concrete(logits, t) (rows: edges)."""
    k = value.shape[-1]
    score = logits - t * value
    return (score - score.logsumexp(-1, keepdim=True)).sum(-1) + math.lgamma(k) + (k - 1) * t.log()


class LeanBayesStep:
    """One SVI step of the mean-field Bayesian supernet, written lean (see the module docstring)."""

    def __init__(self, sizes, edges, num_data: int, lr: float = 1e-3, temperature: float = 1.0,
                 init_scale: float = 1e-2, device="cpu", dtype=torch.float32, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.cell = _Cell(sizes, edges, device, dtype)
        self.num_data = num_data
        c = self.cell
        self.mu = (torch.randn(c.num_parameters, generator=gen).to(device, dtype) * c.init_std).requires_grad_()
        self.rho = torch.full_like(self.mu, math.log(math.expm1(init_scale))).requires_grad_()
        self.q_logits = {k: torch.zeros(len(es), k, device=device, dtype=dtype, requires_grad=True)
                         for k, es in c.by_k.items()}
        self.p_logits = {k: torch.zeros(len(es), k, device=device, dtype=dtype) for k, es in c.by_k.items()}
        self.log_A = torch.zeros(c.num_groups, device=device, dtype=dtype)
        self.t = torch.tensor(float(temperature), device=device, dtype=dtype)
        self.opt = _adam([self.mu, self.rho, *self.q_logits.values()], lr=lr)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        c, t = self.cell, self.t
        s = F.softplus(self.rho)
        w = self.mu + s * torch.randn_like(self.mu)
        log_a = self.log_A.index_select(0, c.group_index)
        kl = 0.5 * (log_a.exp() * (s * s + self.mu * self.mu) - 1 - log_a - 2 * s.log()).sum()
        gammas = {}
        for k, es in c.by_k.items():
            ql = self.q_logits[k]
            u = torch.rand_like(ql).clamp_(1e-12, 1 - 1e-7)
            lg = ((ql - (-u.log()).log()) / t).log_softmax(-1)
            kl = kl + (_concrete_log_prob(lg, ql, t) - _concrete_log_prob(lg, self.p_logits[k], t)).sum()
            g = lg.exp()
            for i, e in enumerate(es):
                gammas[e] = g[i]
        f = c.forward(x, w, gammas)
        log_lik = _class_log_prob(f, y).sum() * (self.num_data / x.shape[0])
        return kl - log_lik

    def step(self, x: Tensor, y: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss(x, y).backward()
        self.opt.step()


class LeanDartsStep:
    """One plain DARTS step: point weights, softmax(alpha) mixing, one Adam step."""

    def __init__(self, sizes, edges, lr: float = 1e-3, device="cpu", dtype=torch.float32, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.cell = _Cell(sizes, edges, device, dtype)
        c = self.cell
        self.w = (torch.randn(c.num_parameters, generator=gen).to(device, dtype) * c.init_std).requires_grad_()
        self.alpha = {k: (1e-3 * torch.randn(len(es), k, generator=gen)).to(device, dtype).requires_grad_()
                      for k, es in c.by_k.items()}
        self.opt = _adam([self.w, *self.alpha.values()], lr=lr)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        gammas = {}
        for k, es in self.cell.by_k.items():
            g = self.alpha[k].softmax(-1)
            for i, e in enumerate(es):
                gammas[e] = g[i]
        return -_class_log_prob(self.cell.forward(x, self.w, gammas), y).mean()

    def step(self, x: Tensor, y: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss(x, y).backward()
        self.opt.step()
