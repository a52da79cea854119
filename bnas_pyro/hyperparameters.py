"""The hyperparameters h = (log A, m[, log beta]) as one explicit module (METHOD.md sections 2, 4).

The outer loop owns this object; the guide owns theta.  Keeping them in separate modules means an
optimiser can always tell them apart.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from bnas_pyro.supernet import ParameterLayout

PrecisionLevel = Literal["group", "parameter", "shared"]


class HyperParameters(nn.Module):
    """h = [log diag A, m] and, for a Normal likelihood with learned noise, log beta.

    - ``log_precision``: log A, one value per group (edge, primitive) with ``precision="group"``,
      per parameter (ARD) with ``"parameter"``, or a single scalar with ``"shared"``;
    - ``structure_logits``: m, the concatenated logits m^{j,k} of every edge (length sum_e K_e);
    - ``log_noise_precision``: log beta (a parameter only when learned; otherwise a buffer).
    """

    def __init__(
        self,
        layout: ParameterLayout,
        precision: PrecisionLevel = "group",
        init_log_precision: float = 0.0,
        init_structure_logits: float = 0.0,
        noise_precision: float | None = None,
        learn_noise_precision: bool = False,
    ):
        super().__init__()
        sizes = {"group": layout.num_groups, "parameter": layout.num_parameters, "shared": 1}
        if precision not in sizes:
            raise ValueError(f"precision must be one of {sorted(sizes)}, got {precision!r}")
        self.precision_level = precision
        self.log_precision = nn.Parameter(torch.full((sizes[precision],), float(init_log_precision)))
        self.structure_logits = nn.Parameter(
            torch.full((sum(layout.edge_sizes),), float(init_structure_logits)))
        self.edge_sizes = list(layout.edge_sizes)
        self._edge_starts = [sum(layout.edge_sizes[:e]) for e in range(len(layout.edge_sizes))]
        self.register_buffer("group_index", layout.group_index.clone(), persistent=False)
        if noise_precision is not None:
            if not noise_precision > 0:
                raise ValueError(f"noise_precision must be > 0, got {noise_precision}")
            value = torch.tensor(float(noise_precision)).log()
            if learn_noise_precision:
                self.log_noise_precision = nn.Parameter(value)
            else:
                self.register_buffer("log_noise_precision", value)
        else:
            self.log_noise_precision = None

    def precision_per_parameter(self) -> Tensor:
        """A expanded to one value per scalar weight, shape ``(num_parameters,)``."""
        return self.log_precision_per_parameter().exp()

    def log_precision_per_parameter(self) -> Tensor:
        """log A expanded to one value per scalar weight, shape ``(num_parameters,)``."""
        log_a = self.log_precision
        if self.precision_level == "group":
            return log_a.index_select(0, self.group_index)   # faster than log_a[index]
        if self.precision_level == "shared":
            return log_a.expand(self.group_index.shape)
        return log_a

    def fix_structure_prior(self, logits: "Tensor | list[float] | None" = None) -> None:
        """State the structure prior instead of learning it: m set to ``logits`` (all edges
        concatenated, length sum_e K_e) or to 0 (uniform over every edge's primitives) and held
        fixed, so that q over structures is a posterior under that prior.  (Learning m with q, as
        evidence mode does by default, is empirical Bayes: m follows q.)"""
        with torch.no_grad():
            if logits is None:
                self.structure_logits.zero_()
            else:
                value = torch.as_tensor(logits, dtype=self.structure_logits.dtype)
                if value.shape != self.structure_logits.shape:
                    raise ValueError(f"structure prior logits must have length "
                                     f"{self.structure_logits.numel()} (sum of the edges' primitive "
                                     f"counts {self.edge_sizes}), got shape {tuple(value.shape)}")
                if not torch.isfinite(value).all():
                    raise ValueError("structure prior logits must be finite")
                self.structure_logits.copy_(value)
        self.structure_logits.requires_grad_(False)

    def logits(self, edge: int) -> Tensor:
        start = self._edge_starts[edge]
        return self.structure_logits[start:start + self.edge_sizes[edge]]

    def noise_precision(self) -> Tensor:
        if self.log_noise_precision is None:
            raise AttributeError("this model has no noise precision (not a Normal likelihood)")
        return self.log_noise_precision.exp()
