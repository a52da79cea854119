"""The run directory's PNG plots, drawn from plain data (so ``bnas-pyro report`` can redraw them).

- :func:`plot_structure_posterior`: q(argmax gamma^e = l) per edge, one bar chart per edge;
- :func:`plot_training`: the ELBO (and the validation metric) over outer steps, and every edge's
  structure probabilities over outer steps;
- :func:`plot_rho_histogram`: the histogram of relative variational densities
  rho = q(w = 0) / q(w = mu) = exp(-mu^2 / (2 sigma^2)) of all weights (METHOD.md section 4):
  mass near 1 is prunable.

Matplotlib runs with the non-interactive Agg backend; every function returns the written path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STRUCTURE_PNG = "structure_posterior.png"
TRAINING_PNG = "training.png"
RHO_PNG = "rho_histogram.png"


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, max(n, 1))
    return int(math.ceil(n / cols)), cols


def plot_structure_posterior(edge_probabilities: Mapping[str, Sequence[float]],
                             labels: Mapping[str, Sequence[str]], path: "str | Path",
                             title: str = "structure posterior q(argmax gamma = l)") -> Path:
    """Bar chart of q's structure probabilities, one panel per edge with a choice."""
    edges = [e for e in edge_probabilities if len(labels[e]) > 1] or list(edge_probabilities)
    rows, cols = _grid(len(edges))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, edge in zip(axes.flat, edges):
        probs = list(edge_probabilities[edge])
        best = max(range(len(probs)), key=probs.__getitem__)
        colors = ["tab:blue" if i == best else "tab:gray" for i in range(len(probs))]
        ax.bar(range(len(probs)), probs, color=colors)
        ax.set_xticks(range(len(probs)))
        ax.set_xticklabels(labels[edge], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(edge, fontsize=10)
        for i, p in enumerate(probs):
            ax.text(i, min(p + 0.02, 0.95), f"{p:.2f}", ha="center", fontsize=7)
    for ax in list(axes.flat)[len(edges):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_training(history: Sequence[Mapping[str, Any]], labels: Mapping[str, Sequence[str]],
                  path: "str | Path", validation_key: str | None = None) -> Path:
    """ELBO over outer steps (with the validation metric) and structure probabilities per edge.

    ``history``: records as dicts with ``step``, ``L``, ``structure_probabilities`` and ``extra``
    (``extra["elbo"]``, at the steps that evaluated it, is drawn when present, else ``L``).
    """
    steps = [h["step"] for h in history]
    evaluated = [h for h in history if "elbo" in h.get("extra", {})]
    elbo_steps = [h["step"] for h in evaluated] if evaluated else steps
    elbo = [h["extra"]["elbo"] for h in evaluated] if evaluated else [h["L"] for h in history]
    edges = [e for e in labels if len(labels[e]) > 1]
    rows, cols = _grid(len(edges))
    fig = plt.figure(figsize=(4.2 * cols, 2.8 * (rows + 1)))
    gs = fig.add_gridspec(rows + 1, cols)
    ax = fig.add_subplot(gs[0, :])
    ax.plot(elbo_steps, elbo, color="tab:blue", lw=1.2)
    ax.set_xlabel("outer step")
    ax.set_ylabel("ELBO", color="tab:blue")
    finite = [v for v in elbo if v == v and abs(v) != float("inf")]
    if finite:  # the first steps dwarf the rest: show the last 90%
        tail = sorted(finite[len(finite) // 10:])
        if tail:
            lo, hi = tail[0], tail[-1]
            pad = 0.05 * (hi - lo if hi > lo else abs(hi) + 1)
            ax.set_ylim(lo - pad, hi + pad)
    if validation_key is not None:
        vals = [(h["step"], h.get("extra", {}).get(validation_key)) for h in history]
        vals = [(s, v) for s, v in vals if isinstance(v, (int, float))]
        if vals:
            ax2 = ax.twinx()
            ax2.plot([s for s, _ in vals], [v for _, v in vals], color="tab:orange", lw=1.2)
            ax2.set_ylabel(validation_key, color="tab:orange")
    ax.set_title("ELBO and validation metric over training")
    for i, edge in enumerate(edges):
        a = fig.add_subplot(gs[1 + i // cols, i % cols])
        series = list(zip(*[h["structure_probabilities"][edge] for h in history])) if history else []
        for lab, ys in zip(labels[edge], series):
            a.plot(steps, ys, lw=1.2, label=lab)
        a.set_ylim(-0.02, 1.02)
        a.set_title(edge, fontsize=10)
        a.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_rho_histogram(bin_edges: Sequence[float], counts: Sequence[float], path: "str | Path",
                       title: str = "relative density rho = exp(-mu^2 / (2 sigma^2))") -> Path:
    """Histogram (counts per bin, log scale) of the relative variational densities rho."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    widths = [b - a for a, b in zip(bin_edges[:-1], bin_edges[1:])]
    ax.bar(bin_edges[:-1], counts, width=widths, align="edge", color="tab:green", edgecolor="none")
    if any(c > 0 for c in counts):
        ax.set_yscale("log")
    ax.set_xlabel("rho (near 1: prunable)")
    ax.set_ylabel("number of weights")
    ax.set_xlim(0, 1)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: "str | Path") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["RHO_PNG", "STRUCTURE_PNG", "TRAINING_PNG", "plot_rho_histogram",
           "plot_structure_posterior", "plot_training"]
