"""Point-weight networks and their plain training, for baselines and for retraining what a
search found.

:class:`PointSupernet` is the supernet (:class:`~bnas_pyro.supernet.Supernet`, same space, same
primitives) with *point* weights and mixing weights ``gamma^e = softmax(alpha^e)``: no priors, no
posterior (the relaxation of Liu, Simonyan, Yang 2019, "DARTS").  :func:`discrete_network` builds
the network of one discrete structure (a ``PointSupernet`` on ``space.restrict(structure)``, no
mixing) and :func:`train_network` trains any network with a fixed budget (cross-entropy or squared
error, Adam with a cosine decay).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bnas_pyro.inference import MinibatchSampler
from bnas_pyro.models.likelihoods import categorical_log_prob
from bnas_pyro.optimisers import adam
from bnas_pyro.search_space import SearchSpace
from bnas_pyro.supernet import Supernet


class PointSupernet(nn.Module):
    """The supernet with point weights W (one flat ``nn.Parameter``) and softmax(alpha) mixing.

    Args:
        space: the search space (edges with one primitive get no alpha).
        generator: seeds the initial weights (N(0, init_std) per primitive, as the guides'
            means) and alpha (N(0, 1e-3), as in DARTS).
    """

    def __init__(self, space: SearchSpace, generator: torch.Generator | None = None):
        super().__init__()
        self.space = space
        self.supernet = Supernet(space)
        std = self.supernet.layout.init_std
        self.weights = nn.Parameter(torch.randn(std.shape, generator=generator) * std)
        sizes = self.supernet.layout.edge_sizes
        self.alpha = nn.Parameter(1e-3 * torch.randn(sum(sizes), generator=generator))
        self._starts = [sum(sizes[:e]) for e in range(len(sizes))]
        self._sizes = list(sizes)

    def edge_alpha(self, e: int) -> Tensor:
        return self.alpha[self._starts[e]:self._starts[e] + self._sizes[e]]

    def gammas(self) -> list[Tensor | None]:
        return [None if k == 1 else torch.softmax(self.edge_alpha(e), -1)
                for e, k in enumerate(self._sizes)]

    def forward(self, x: Tensor) -> Tensor:
        return self.supernet(x, self.weights, self.gammas())

    def edge_probabilities(self) -> dict[str, list[float]]:
        """softmax(alpha^e) per edge (1.0 for single-primitive edges)."""
        with torch.no_grad():
            return {e.name: ([1.0] if g is None else g.tolist())
                    for e, g in zip(self.space.edges, self.gammas())}

    @property
    def structure(self) -> dict[str, str]:
        """argmax alpha per edge over all its primitives (zero included), as edge -> label."""
        return self.derive(exclude_zero=False)

    def derive(self, exclude_zero: bool = False, top_k: int | None = None) -> dict[str, str]:
        """The discrete structure read off alpha, as edge name -> primitive label.

        ``exclude_zero=False``: argmax alpha per edge over all its primitives.  ``exclude_zero``:
        DARTS's own derivation rule (Liu, Simonyan, Yang 2019, section 2.4): on every edge the
        strongest operation, strength ``softmax(alpha^e)_l``, among the *non-zero* candidates
        (the zero op's strength is underdetermined there, so it is never chosen, unless it is
        the edge's only primitive).  ``top_k`` (with ``exclude_zero``) adds the rule's edge
        pruning: each node keeps the ``top_k`` incoming edges whose chosen operation is
        strongest (DARTS: k = 2 in convolutional cells, k = 1 in recurrent ones); the others
        get their zero op where they offer one.  ``None`` keeps every edge.
        """
        if top_k is not None and (not exclude_zero or int(top_k) < 1):
            raise ValueError(f"top_k={top_k!r} needs exclude_zero=True and top_k >= 1")
        probs = self.edge_probabilities()
        out, strength = {}, {}
        for e, prims in zip(self.space.edges, self.space.primitive_instances):
            allowed = [l for l in range(len(e)) if not (exclude_zero and prims[l].is_zero)] or [0]
            best = max(allowed, key=lambda l: probs[e.name][l])
            out[e.name], strength[e.name] = e.labels[best], probs[e.name][best]
        if top_k is not None:
            for node in {e.target for e in self.space.edges}:
                incoming = [(e, prims) for e, prims in zip(self.space.edges,
                                                           self.space.primitive_instances)
                            if e.target == node]
                ranked = sorted(incoming, key=lambda ep: -strength[ep[0].name])
                for e, prims in ranked[int(top_k):]:
                    zeros = [l for l, p in enumerate(prims) if p.is_zero]
                    if zeros:
                        out[e.name] = e.labels[zeros[0]]
        return out

    def weight_parameters(self) -> list[nn.Parameter]:
        return [self.weights]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]


def discrete_network(space: SearchSpace, structure: Mapping[str, str],
                     generator: torch.Generator | None = None) -> PointSupernet:
    """A freshly initialised network of one discrete structure (edge name -> primitive label)."""
    return PointSupernet(space.restrict(dict(structure)), generator=generator)


def task_loss(task: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Mean cross-entropy for classification (:func:`~bnas_pyro.models.likelihoods.
    categorical_log_prob`, the fastest form for the layout), mean squared error (halved) for
    regression."""
    if task == "classification":
        def cross_entropy(f: Tensor, y: Tensor) -> Tensor:
            return -categorical_log_prob(f, y).mean()

        return cross_entropy

    def mse(f: Tensor, y: Tensor) -> Tensor:
        f = f.squeeze(-1) if f.dim() == 2 and f.shape[-1] == 1 else f
        return 0.5 * (f - y).pow(2).mean()

    return mse


def train_network(net: nn.Module, x: Tensor, y: Tensor, task: str, *, epochs: int = 100,
                  batch_size: int = 128, lr: float = 3e-3, weight_decay: float = 1e-4,
                  seed: int = 0, progress: bool = False) -> list[float]:
    """Train ``net`` on (x, y) for a fixed number of epochs with Adam; returns per-epoch losses.

    A cosine learning-rate decay to 0 makes the result insensitive to the exact epoch count.
    """
    torch.manual_seed(seed)
    loss_fn = task_loss(task)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        return []
    opt = adam(params, lr=lr, weight_decay=weight_decay)
    sampler = MinibatchSampler(x, y, batch_size, torch.Generator().manual_seed(seed))
    steps = max(1, math.ceil(sampler.num_data / sampler.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    losses = []
    net.train()
    for _ in tqdm(range(epochs), desc="retrain", disable=not progress, leave=False):
        total = 0.0
        for _ in range(steps):
            xb, yb = next(sampler)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        losses.append(total / steps)
    net.eval()
    return losses


def residual_std(net: nn.Module, x: Tensor, y: Tensor) -> float:
    """The maximum-likelihood noise level of a regression network on (x, y)."""
    with torch.no_grad():
        f = net(x)
        f = f.squeeze(-1) if f.dim() == 2 and f.shape[-1] == 1 else f
        return float((f - y).pow(2).mean().sqrt())


__all__ = ["PointSupernet", "discrete_network", "residual_std", "task_loss", "train_network"]
