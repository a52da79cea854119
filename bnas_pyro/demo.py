"""`make demo`: a real structure search on data generated here (replaced by the CLI's default search).

Chooses the degree of a polynomial (0..5) for y = x^3 - x + noise by evidence maximisation over
(q(W, Gamma), A, m) jointly (METHOD.md section 4, the seed's polynomial example).
"""

from __future__ import annotations

import torch

from bnas_pyro import Coefficients, SearchSpace, fit
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood


def main() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, generator=g) * 4 - 2
    y = (x**3 - x).squeeze(-1) + 0.5 * torch.randn(40, generator=g)
    degrees = [{"name": "poly", "degree": d} for d in range(6)]
    space = SearchSpace({"x": 1, "y": 1}, [("x", "y", degrees)])
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=4.0))
    guide = MeanFieldGuide(model, init_scale=0.05)
    fit(model, guide, x, y, num_steps=3000, lr=0.02, coefficients=Coefficients(c_temp=1.0),
        train_hyperparameters=True, num_particles=2)
    probs = guide.structure.probabilities()[0].detach()
    for d, p in enumerate(probs.tolist()):
        print(f"degree {d}: q(argmax gamma = {d}) = {p:.3f}")
    print(f"most probable degree: {int(probs.argmax())}")


if __name__ == "__main__":
    main()
