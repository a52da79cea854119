"""ArviZ InferenceData of a search result: groups, dims and coordinates; values checked against
properties we know (Concrete argmax frequencies, hand-computed log-likelihoods); az.summary,
az.loo, az.plot_posterior and az.compare run on it."""

import math
import warnings

import numpy as np
import pytest
import torch

from bnas_pyro import BilevelSearch, Coefficients, SearchSpace
from bnas_pyro.analysis import arviz_data as post
from bnas_pyro.data import load_dataset
from bnas_pyro.analysis.result import SearchResult
from bnas_pyro.guides import DeltaGuide, MeanFieldGuide
from bnas_pyro.models import BayesianSupernet
from bnas_pyro.spaces import mlp_cell_space


@pytest.fixture(scope="module")
def wine():
    return load_dataset("wine", seed=0)


def _search(data, outer_steps, seed=0):
    space = mlp_cell_space(13, 3, hidden=8)
    model = BayesianSupernet(space)
    guide = MeanFieldGuide(model, init_scale=0.05, generator=torch.Generator().manual_seed(seed))
    s = BilevelSearch(model, guide, Coefficients(), "joint", inner_steps=10, outer_steps=outer_steps,
                      batch_size=None, lr=0.03, hyper_lr=0.05, progress=False, seed=seed)
    return s.run(data.x_train, data.y_train)


@pytest.fixture(scope="module")
def fitted(wine):
    return _search(wine, 20)


@pytest.fixture(scope="module")
def idata(fitted, wine):
    return fitted.to_inference_data(x=wine.x_train, y=wine.y_train, num_draws=240, num_chains=4,
                                    seed=0)


def test_groups_dims_and_coordinates(fitted, idata, wine):
    assert set(idata.groups()) == {"posterior", "prior", "log_likelihood", "observed_data",
                                   "sample_stats"}
    space = fitted.space
    for group in (idata.posterior, idata.prior):
        assert group.sizes["chain"] == 4 and group.sizes["draw"] == 60
        for e in space.edges:
            var = f"gamma[{e.name}]"
            if len(e) == 1:
                assert var not in group  # nothing is chosen on a single-primitive edge
                continue
            assert group[var].dims == ("chain", "draw", f"primitive[{e.name}]")
            assert group[var].coords[f"primitive[{e.name}]"].values.tolist() == e.labels
            np.testing.assert_allclose(group[var].sum(f"primitive[{e.name}]"), 1.0, rtol=1e-6)
        rms = group["weight_rms"]
        assert rms.dims == ("chain", "draw", "group")
        sizes = fitted.model.layout.group_sizes().tolist()
        expected = [f"{e}:{p}" for (e, p), n in zip(fitted.model.layout.group_labels, sizes) if n > 0]
        assert rms.coords["group"].values.tolist() == expected  # identity / zero have no weights
        assert rms.coords["group_edge"].values.tolist() == [g.split(":")[0] for g in expected]
        assert bool((rms > 0).all())
    n = len(wine.y_train)
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "obs_id")
    assert idata.log_likelihood["obs"].shape == (4, 60, n)
    np.testing.assert_array_equal(idata.observed_data["obs"].values, wine.y_train.numpy())
    st = idata.sample_stats
    np.testing.assert_allclose(st["log_weight"], st["lp"] - st["log_q"], rtol=1e-6)
    assert bool(np.isfinite(st["lp"]).all()) and bool(np.isfinite(st["log_q"]).all())


def test_gamma_draws_follow_q_and_the_prior(fitted, idata):
    """P(argmax gamma = l) = softmax(logits)_l for a Concrete distribution (METHOD.md section 2)."""
    q_probs = fitted.edge_probabilities()
    for e in fitted.space.edges:
        if len(e) == 1:
            continue
        for group, probs in ((idata.posterior, q_probs[e.name]),
                             (idata.prior, torch.softmax(fitted.model.hyper.logits(
                                 fitted.space.edge_index(e.name)).detach(), -1).tolist())):
            g = group[f"gamma[{e.name}]"].values.reshape(-1, len(e))
            freq = np.bincount(g.argmax(-1), minlength=len(e)) / g.shape[0]
            se = np.sqrt(np.asarray(probs) * (1 - np.asarray(probs)) / g.shape[0])
            assert np.all(np.abs(freq - probs) <= 4.5 * se + 1e-3), (e.name, freq, probs)


def test_log_likelihood_and_lp_by_hand():
    """A single-primitive space with a point-mass guide: every number is computable directly."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)
    space = SearchSpace({"x": 4, "y": 3}, [("x", "y", ["linear"])])
    model = BayesianSupernet(space, init_log_precision=math.log(2.0))
    guide = DeltaGuide(model, generator=torch.Generator().manual_seed(1))
    data = post.to_inference_data(None, x=x, y=y, num_draws=6, num_chains=2, model=model, guide=guide)
    w = guide.loc.detach()
    logits = x @ w[:12].view(4, 3) + w[12:]
    ll = torch.log_softmax(logits, -1).gather(-1, y[:, None]).squeeze(-1)
    np.testing.assert_allclose(data.log_likelihood["obs"].values[1, 2], ll.numpy(), rtol=1e-5)
    prior = torch.distributions.Normal(0.0, 2.0 ** -0.5).log_prob(w).sum()
    np.testing.assert_allclose(data.sample_stats["lp"].values, float(ll.sum() + prior), rtol=1e-5)
    np.testing.assert_allclose(data.sample_stats["log_q"].values, 0.0, atol=1e-6)  # a Delta
    assert not [v for v in data.posterior.data_vars if v.startswith("gamma")]
    np.testing.assert_allclose(data.posterior["weight_rms"].values[0, 0, 0],
                               float(w.pow(2).mean().sqrt()), rtol=1e-5)


def test_arviz_summary_loo_and_plot(idata, wine):
    s = post.summary(idata)
    assert "gamma[x->h1][relu]" in s.index and "weight_rms[x->h1:relu]" in s.index
    gamma_rows = s.loc[[i for i in s.index if i.startswith("gamma")]]
    assert gamma_rows["r_hat"].max() < 1.05  # the draws are independent
    assert ((gamma_rows["mean"] >= 0) & (gamma_rows["mean"] <= 1)).all()
    loo = post.loo(idata, pointwise=True)
    assert loo.n_data_points == len(wine.y_train)
    lppd = float(np.log(np.exp(idata.log_likelihood["obs"].values).reshape(-1, len(wine.y_train))
                        .mean(0)).sum())
    assert math.isfinite(loo.elpd_loo) and loo.elpd_loo <= lppd + 1e-6  # LOO pays for the fit
    assert math.isclose(loo.p_loo, lppd - loo.elpd_loo, rel_tol=1e-6)
    import matplotlib

    matplotlib.use("Agg")
    axes = post.plot_posterior(idata, var_names=["gamma[x->h1]", "gamma[h1->y]"])
    assert len([a for a in np.ravel(axes) if a.has_data()]) == 3 + 2  # one panel per cell
    import matplotlib.pyplot as plt

    plt.close("all")


def test_padded_gamma_array(idata, fitted):
    arr = post.gamma_array(idata)
    assert arr.dims == ("chain", "draw", "edge", "primitive")
    choice_edges = [e for e in fitted.space.edges if len(e) > 1]
    assert arr.coords["edge"].values.tolist() == [e.name for e in choice_edges]
    union = arr.coords["primitive"].values.tolist()
    for e in choice_edges:
        row = arr.sel(edge=e.name).isel(chain=0, draw=0)
        for lab in union:
            assert bool(np.isnan(row.sel(primitive=lab))) == (lab not in e.labels)


def test_netcdf_round_trip_and_determinism(idata, fitted, wine, tmp_path):
    path = post.save(idata, tmp_path / "posterior.nc")
    back = post.load(path)
    np.testing.assert_array_equal(back.posterior["gamma[x->h2]"].values,
                                  idata.posterior["gamma[x->h2]"].values)
    assert back.posterior["gamma[x->h2]"].dims == idata.posterior["gamma[x->h2]"].dims
    one, two, other = (fitted.to_inference_data(x=wine.x_train, y=wine.y_train, num_draws=10,
                                                num_chains=2, num_prior_draws=2, seed=s)
                       for s in (5, 5, 6))
    np.testing.assert_array_equal(one.log_likelihood["obs"].values, two.log_likelihood["obs"].values)
    assert not np.array_equal(one.log_likelihood["obs"].values, other.log_likelihood["obs"].values)


def test_compare_ranks_a_fitted_search_above_an_unfitted_one(fitted, wine):
    # q at its initial values (a search refuses zero outer steps: the result is built directly)
    from bnas_pyro.analysis import comparison

    model = BayesianSupernet(mlp_cell_space(13, 3, hidden=8))
    guide = MeanFieldGuide(model, init_scale=0.05, generator=torch.Generator().manual_seed(1))
    unfitted = SearchResult(model, guide, [])
    with pytest.warns(UserWarning, match=r"Pareto k > 0.7 in .*'unfitted'"):
        table = comparison.compare({"fitted": fitted, "unfitted": unfitted}, wine.x_train,
                                   wine.y_train, num_draws=100, refit_steps=100)
    # by evidence (each structure refitted at its own h): the fitted search's structure first
    assert table.index[0] == "fitted" and table.loc["fitted", "rank"] == 0
    assert table.loc["unfitted", "evidence_diff"] > 0 and table.loc["fitted", "beats_next"] > 0.5
    assert table.loc["fitted", "evidence_se"] > 0 and table.loc["fitted", "structure"] == fitted.structure
    # PSIS-LOO stays as a predictive check, with its Pareto-k diagnostics
    assert table.loc["unfitted", "elpd_diff"] > 10
    assert table.loc["unfitted", "pareto_k_max"] > 0.7 and table.loc["unfitted", "pareto_k_over_0.7"] > 0
    from bnas_pyro import compare

    assert compare is comparison.compare
    with pytest.raises(ValueError, match="pass the data"):
        comparison.compare([fitted, unfitted])
    idata = fitted.to_inference_data(x=wine.x_train, y=wine.y_train, num_draws=10, num_chains=2,
                                     num_prior_draws=2)
    with pytest.raises(ValueError, match="'a' is InferenceData.*by='loo'"):
        comparison.compare({"a": idata, "b": fitted}, wine.x_train, wine.y_train)
