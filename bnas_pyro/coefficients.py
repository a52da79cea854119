"""The coefficients of the generalised bilevel problem (METHOD.md section 4).

    L = E_q log p(y|X,W,Gamma) - c_reg * KL(q || p(.|h))                           (inner)
    Q = c_train * E_q log p(y|X,W,Gamma) - c_prior * KL(q || p(.|h))
        - sum_{p' in P} c_comb * KL(p(Gamma|h) || p') + log p(h)                    (outer)

and the temperature c_temp of the Concrete structure prior.  The inner objective follows
METHOD.md section 4 (the thesis): c_train weighs the likelihood only in Q.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Coefficients:
    """(c_reg, c_train, c_prior, c_comb, c_temp); all 1 with c_comb = 0 is evidence maximisation."""

    c_reg: float = 1.0
    c_train: float = 1.0
    c_prior: float = 1.0
    c_comb: float = 0.0
    c_temp: float = 1.0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"coefficient {f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"coefficient {f.name} must be finite, got {value}")
            object.__setattr__(self, f.name, float(value))
        if self.c_temp <= 0:
            raise ValueError(f"coefficient c_temp (temperature) must be > 0, got {self.c_temp}")
        for name in ("c_reg", "c_prior"):
            if getattr(self, name) < 0:
                raise ValueError(f"coefficient {name} must be >= 0, got {getattr(self, name)}")
        if self.c_train < 0:
            raise ValueError(f"coefficient c_train must be >= 0, got {self.c_train}")

    def replace(self, **changes) -> "Coefficients":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def is_evidence(self) -> bool:
        """True when the bilevel problem reduces to single-level ELBO maximisation (theorem)."""
        return self.c_reg == self.c_train == self.c_prior == 1.0 and self.c_comb == 0.0
