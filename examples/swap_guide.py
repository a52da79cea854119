"""Swap the guide: the same model fitted with four guides, including Pyro's own AutoNormal.

Any callable with the model's signature ``guide(x, y=None, num_data=None)`` that samples the same
sites ("weights" and one "gamma[EDGE]" per edge with a choice) is a guide.  Here the model is the
the source talk's polynomial example (which degree, 0..5, explains y = x^3 - x + noise?).

    python examples/swap_guide.py
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuideList, AutoNormal

from bnas_pyro import Coefficients, SearchSpace, estimate_elbo, fit
from bnas_pyro.analysis.result import edge_probabilities
from bnas_pyro.guides import ConcreteStructureGuide, DeltaGuide, FullRankGuide, MeanFieldGuide
from bnas_pyro.models import WEIGHT_SITE, BayesianSupernet, NormalLikelihood


def make_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(40, 1, generator=g) * 4 - 2
    y = (x**3 - x).squeeze(-1) + 0.5 * torch.randn(40, generator=g)
    return x, y


def make_model() -> BayesianSupernet:
    space = SearchSpace({"x": 1, "y": 1},
                        [("x", "y", [{"name": "poly", "degree": d} for d in range(6)])])
    return BayesianSupernet(space, likelihood=NormalLikelihood(precision=4.0), temperature=1.0)


def autonormal_weights(model: BayesianSupernet) -> AutoGuideList:
    """Pyro's AutoNormal on the weights, a Concrete q on the structure, combined by AutoGuideList.

    An autoguide's Normal on the structure sites (log gamma) would be improper: the Concrete
    density of log gamma is flat along log gamma + c, so its entropy could grow without bound.
    """
    guide = AutoGuideList(model)
    guide.append(AutoNormal(poutine.block(model, expose=[WEIGHT_SITE]), init_scale=0.05))
    guide.append(ConcreteStructureGuide(model))
    return guide


GUIDES = {
    "MeanFieldGuide": lambda m: MeanFieldGuide(m, init_scale=0.05),
    "FullRankGuide": lambda m: FullRankGuide(m, init_scale=0.05),
    "DeltaGuide (MAP weights)": lambda m: DeltaGuide(m),
    "pyro AutoNormal (weights)": autonormal_weights,
}


def run(num_steps: int = 2000, seed: int = 0, progress: bool = False) -> dict[str, dict]:
    x, y = make_data(seed)
    out = {}
    for name, make_guide in GUIDES.items():
        torch.manual_seed(seed)
        model = make_model()
        guide = make_guide(model)
        fit(model, guide, x, y, num_steps=num_steps, lr=0.02, coefficients=Coefficients(c_temp=1.0),
            seed=seed, progress=progress)
        probs = edge_probabilities(model, guide)["x->y"]
        elbo, se = estimate_elbo(model, guide, x, y, num_particles=200)
        out[name] = {"probabilities": probs, "degree": int(torch.tensor(probs).argmax()),
                     "elbo": elbo, "elbo_se": se}
    return out


def main() -> None:
    for name, r in run(progress=True).items():
        probs = " ".join(f"{p:.2f}" for p in r["probabilities"])
        print(f"{name:26s} degree {r['degree']}  q(degree)=[{probs}]  "
              f"ELBO {r['elbo']:.1f} +- {r['elbo_se']:.1f}")
    print("(the DeltaGuide's 'ELBO' is the MAP objective log p(y, w_hat) plus the structure terms)")


if __name__ == "__main__":
    main()
