"""The custom-prior and swapped-guide examples run and reach the answer closed-form evidence gives (degree 3)."""

import sys
from pathlib import Path

import pyro.distributions as dist
import torch
from pyro import poutine

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))

import custom_prior  # noqa: E402
import swap_guide  # noqa: E402


def test_custom_priors_are_used_and_find_degree_three():
    out = custom_prior.run(num_steps=1500)
    assert all(r["degree"] == 3 for r in out.values()), out
    space = swap_guide.make_model().space
    from bnas_pyro.models import BayesianSupernet

    model = BayesianSupernet(space, weight_prior=custom_prior.laplace_weight_prior,
                             structure_prior=custom_prior.SimplicityStructurePrior())
    tr = poutine.trace(model).get_trace(torch.zeros(2, 1))
    assert isinstance(tr.nodes["weights"]["fn"].base_dist, dist.Laplace)
    logits = tr.nodes["gamma[x->y]"]["fn"].logits
    assert torch.all(logits[:-1] > logits[1:])  # cheaper primitives are a priori more probable


def test_swapped_guides_all_run_and_agree_on_the_degree():
    out = swap_guide.run(num_steps=1500)
    assert out["MeanFieldGuide"]["degree"] == 3
    assert out["pyro AutoNormal (weights)"]["degree"] == 3
    # the full-rank family contains the mean-field one; both must put their mode on degree 3
    assert out["FullRankGuide"]["degree"] == 3
