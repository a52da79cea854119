"""The posterior over structures as ArviZ ``InferenceData``; every ArviZ call of the package is here.

Keeping ArviZ in this one module makes the move to ArviZ 1.x (``DataTree``,
``arviz_base.from_dict``) a one-file change: :func:`_from_dict`, :func:`summary`, :func:`loo`,
:func:`compare_loo`, :func:`save`, :func:`load` and :func:`plot_posterior` are the only places
that touch ``arviz``.

Groups of :func:`to_inference_data` (draws are independent samples of q, split into chains):

- ``posterior``: ``gamma[EDGE]`` for every edge with a choice, dims ``(chain, draw,
  primitive[EDGE])`` with the edge's primitive labels as coordinates; and ``weight_rms``, the
  root-mean-square of each (edge, primitive) group's sampled weights, dims ``(chain, draw,
  group)``, coordinates ``"EDGE:PRIMITIVE"`` (with non-index coordinates ``group_edge`` and
  ``group_primitive``); parameter-free primitives have no group there.
- ``prior``: the same variables drawn from p(W, Gamma | h) at the final h and c_temp.
- ``log_likelihood``: ``obs``, pointwise log p(y_i | x_i, W, Gamma) per draw, dims ``(chain,
  draw, obs_id)`` (for PSIS-LOO);
- ``observed_data``: ``obs`` = y, dims ``(obs_id,)``;
- ``sample_stats``: ``lp`` = log p(y, W, Gamma | X, h), ``log_q`` = log q(W, Gamma), and
  ``log_weight`` = lp - log_q (its log-mean-exp is an importance-sampling estimate of the log
  evidence), per draw.

Design choice: edges carry different numbers of primitives, so
gamma is stored as **one variable per edge** (named like its Pyro site, ``gamma[x->h1]``) rather
than one ``(edge, primitive)`` array padded with NaN.  Padding would break ``az.plot_posterior``
(ArviZ 0.23 fails on an all-NaN cell, even with ``skipna=True``); per-edge variables keep every
ArviZ function working and keep named coordinates.  :func:`gamma_array` returns the padded
``(chain, draw, edge, primitive)`` ``xarray.DataArray`` (primitive = the union of all labels,
NaN where an edge lacks a primitive) for users who want the table view.

Gamma lives on the simplex; ``gamma`` here is exp of the site's log gamma, normalised.  LOO on
draws of q (not of the exact posterior) is the usual variational approximation: check the Pareto
k diagnostics that ``az.loo`` reports.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from bnas_pyro.atomic_files import atomic_path
from bnas_pyro.checks import check_data, check_model_guide
from bnas_pyro.models.likelihoods import OBS_SITE
from bnas_pyro.models.structure_priors import structure_site
from bnas_pyro.models.weight_priors import WEIGHT_SITE


def _arviz():
    with warnings.catch_warnings():  # ArviZ 0.2x announces its 1.x refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def gamma_var(edge_name: str) -> str:
    """The InferenceData variable of edge ``edge_name``'s structure (same as its Pyro site)."""
    return structure_site(edge_name)


def primitive_dim(edge_name: str) -> str:
    """The dimension name of edge ``edge_name``'s primitives."""
    return f"primitive[{edge_name}]"


def _choice_edges(space) -> list:
    return [e for e in space.edges if len(e) > 1]


def _groups_with_parameters(layout) -> list[tuple[int, str, str]]:
    sizes = layout.group_sizes().tolist()
    return [(g, edge, prim) for g, ((edge, prim), n) in enumerate(zip(layout.group_labels, sizes)) if n > 0]


def _draw_values(model, trace, groups) -> dict[str, np.ndarray]:
    """gamma per edge and the weight RMS per group from one trace (of the guide or the prior)."""
    out: dict[str, np.ndarray] = {}
    for e in _choice_edges(model.space):
        lg = trace.nodes[structure_site(e.name)]["value"].detach()
        out[gamma_var(e.name)] = torch.softmax(lg.double(), -1).cpu().numpy()
    w = trace.nodes[WEIGHT_SITE]["value"].detach().double()
    layout = model.layout
    index = model.supernet.group_index.to(w.device)
    sq = torch.zeros(layout.num_groups, dtype=w.dtype, device=w.device).index_add_(0, index, w * w)
    sizes = layout.group_sizes().to(w.device).clamp_min(1)
    rms = (sq / sizes).sqrt().cpu().numpy()
    out["weight_rms"] = rms[[g for g, _, _ in groups]]
    return out


@torch.no_grad()
def sample_posterior(model, guide, x: Tensor | None = None, y: Tensor | None = None,
                     num_draws: int = 400, num_prior_draws: int | None = None,
                     seed: int | None = 0, batch_size: int = 4096) -> dict[str, Any]:
    """Draws of q (and of the prior) as numpy arrays, ready for :func:`to_inference_data`.

    With ``(x, y)``: the pointwise log-likelihood per draw and the per-draw ``lp``/``log_q``.
    """
    with torch.random.fork_rng(devices=[x.device] if x is not None and x.device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)  # seeds the draws only: the caller's stream is restored
        return _sample_posterior(model, guide, x, y, num_draws, num_prior_draws, batch_size)


def _sample_posterior(model, guide, x, y, num_draws, num_prior_draws, batch_size) -> dict[str, Any]:
    groups = _groups_with_parameters(model.layout)
    in_shape = model.space.input_shape
    param = next(iter(model.hyper.parameters()))
    probe = x[:1] if x is not None else torch.zeros((1,) + tuple(in_shape), dtype=param.dtype,
                                                     device=param.device)
    n = None if x is None else x.shape[0]
    post: dict[str, list] = {}
    stats: dict[str, list] = {"lp": [], "log_q": [], "log_weight": []}
    log_lik = []
    for _ in range(num_draws):
        gtr = poutine.trace(guide).get_trace(probe, None, n)
        for k, v in _draw_values(model, gtr, groups).items():
            post.setdefault(k, []).append(v)
        if x is None:
            continue
        gtr.compute_log_prob()
        log_q = sum(float(site["log_prob_sum"]) for site in gtr.nodes.values()
                    if site["type"] == "sample" and not site["is_observed"])
        ll_parts, lp_prior = [], None
        for a in range(0, n, batch_size):
            mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(
                x[a:a + batch_size], None if y is None else y[a:a + batch_size], n)
            site = mtr.nodes[OBS_SITE]
            ll_parts.append(site["fn"].log_prob(site["value"]).double())
            if lp_prior is None:
                lp_prior = sum(float(s["fn"].log_prob(s["value"]).sum()) for name, s in mtr.nodes.items()
                               if s["type"] == "sample" and not s["is_observed"]
                               and not site_is_subsample(s))
        ll = torch.cat(ll_parts)
        log_lik.append(ll.cpu().numpy())
        lp = float(ll.sum()) + float(lp_prior)
        stats["lp"].append(lp)
        stats["log_q"].append(log_q)
        stats["log_weight"].append(lp - log_q)
    prior: dict[str, list] = {}
    for _ in range(num_draws if num_prior_draws is None else num_prior_draws):
        ptr = poutine.trace(poutine.block(model, hide=[OBS_SITE])).get_trace(probe)
        for k, v in _draw_values(model, ptr, groups).items():
            prior.setdefault(k, []).append(v)
    return {
        "posterior": {k: np.stack(v) for k, v in post.items()},
        "prior": {k: np.stack(v) for k, v in prior.items()},
        "log_likelihood": None if x is None else np.stack(log_lik),
        "sample_stats": None if x is None else {k: np.asarray(v) for k, v in stats.items()},
        "observed": None if y is None else y.detach().cpu().numpy(),
        "groups": groups,
    }


def _chains(a: np.ndarray, chains: int) -> np.ndarray:
    n = a.shape[0] - a.shape[0] % chains
    return a[:n].reshape((chains, n // chains) + a.shape[1:])


def to_inference_data(result, x: Tensor | None = None, y: Tensor | None = None, *,
                      num_draws: int = 400, num_chains: int = 2, num_prior_draws: int | None = None,
                      seed: int | None = 0, model=None, guide=None):
    """ArviZ ``InferenceData`` of a search result's q(W, Gamma) (groups in the module docstring).

    Args:
        result: a :class:`~bnas_pyro.analysis.result.SearchResult` (or ``None`` with ``model`` and
            ``guide`` given).
        x, y: the data for ``log_likelihood`` / ``observed_data`` / ``sample_stats`` (use the
            training data for LOO); without them those groups are left out.
        num_draws: total draws of q, split into ``num_chains`` chains of independent draws.
        num_prior_draws: draws of the prior (default ``num_draws``).
        seed: seeds the draws (same seed, same InferenceData).
    """
    model = model if model is not None else result.model
    guide = guide if guide is not None else result.guide
    if x is not None:
        check_data(x, y, model, guide)
    else:
        check_model_guide(model, guide)
    if num_chains < 1 or num_draws < num_chains:
        raise ValueError(f"need num_draws >= num_chains >= 1, got {num_draws}, {num_chains}")
    s = sample_posterior(model, guide, x, y, num_draws=num_draws,
                         num_prior_draws=num_prior_draws, seed=seed)
    coords: dict[str, Any] = {}
    dims: dict[str, list[str]] = {}
    for e in _choice_edges(model.space):
        coords[primitive_dim(e.name)] = e.labels
        dims[gamma_var(e.name)] = [primitive_dim(e.name)]
    groups = s["groups"]
    coords["group"] = [f"{edge}:{prim}" for _, edge, prim in groups]
    dims["weight_rms"] = ["group"]
    posterior = {k: _chains(v, num_chains) for k, v in s["posterior"].items()}
    n_prior = next(iter(s["prior"].values())).shape[0]
    prior = {k: _chains(v, num_chains if n_prior >= num_chains else 1) for k, v in s["prior"].items()}
    kwargs: dict[str, Any] = {"posterior": posterior, "prior": prior}
    if s["log_likelihood"] is not None:
        kwargs["log_likelihood"] = {OBS_SITE: _chains(s["log_likelihood"], num_chains)}
        kwargs["sample_stats"] = {k: _chains(v, num_chains) for k, v in s["sample_stats"].items()}
        dims[OBS_SITE] = ["obs_id"]
        coords["obs_id"] = np.arange(s["log_likelihood"].shape[1])
    if s["observed"] is not None:
        kwargs["observed_data"] = {OBS_SITE: s["observed"]}
        dims[OBS_SITE] = ["obs_id"] + [f"obs_dim_{i}" for i in range(s["observed"].ndim - 1)]
    attrs = {"inference_library": "pyro", "creator": "bnas_pyro",
             "edges": json.dumps({e.name: e.labels for e in model.space.edges}),
             "structure_probabilities": json.dumps(_q_probabilities(model, guide)),
             "note": "draws are independent samples of the variational q, split into chains"}
    idata = _from_dict(kwargs, coords, dims, attrs)
    group_edge = [edge for _, edge, _ in groups]
    group_prim = [prim for _, _, prim in groups]
    for grp in ("posterior", "prior"):
        ds = getattr(idata, grp)
        ds.coords["group_edge"] = ("group", group_edge)
        ds.coords["group_primitive"] = ("group", group_prim)
    return idata


def _q_probabilities(model, guide) -> dict[str, list[float]]:
    from .structure_posterior import edge_probabilities

    return edge_probabilities(model, guide)


def _from_dict(groups: Mapping[str, Any], coords, dims, attrs):
    az = _arviz()
    idata = az.from_dict(**groups, coords=coords, dims=dims, attrs=attrs)
    return idata


# ------------------------------------------------------------------------------ analysis
def gamma_array(idata, group: str = "posterior"):
    """All edges' gamma as one ``(chain, draw, edge, primitive)`` DataArray, NaN-padded.

    The ``primitive`` coordinate is the union of all edges' labels (in first-seen order); a cell
    is NaN where that edge does not carry that primitive.
    """
    import xarray as xr

    ds = getattr(idata, group)
    names = [v for v in ds.data_vars if v.startswith("gamma[")]
    edges = [v[len("gamma["):-1] for v in names]
    labels: list[str] = []
    for v, e in zip(names, edges):
        for lab in ds[v].coords[primitive_dim(e)].values.tolist():
            if lab not in labels:
                labels.append(lab)
    chain, draw = ds.sizes["chain"], ds.sizes["draw"]
    data = np.full((chain, draw, len(edges), len(labels)), np.nan)
    for i, (v, e) in enumerate(zip(names, edges)):
        for j, lab in enumerate(ds[v].coords[primitive_dim(e)].values.tolist()):
            data[:, :, i, labels.index(lab)] = ds[v].sel({primitive_dim(e): lab}).values
    return xr.DataArray(data, dims=("chain", "draw", "edge", "primitive"),
                        coords={"chain": ds.coords["chain"].values, "draw": ds.coords["draw"].values,
                                "edge": edges, "primitive": labels}, name="gamma")


def summary(idata, var_names: Sequence[str] | None = None, **kwargs):
    """``az.summary`` (a pandas DataFrame)."""
    az = _arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.summary(idata, var_names=var_names, **kwargs)


def loo(idata, pointwise: bool = False):
    """PSIS-LOO (``az.loo``) of the ``log_likelihood`` group."""
    az = _arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.loo(idata, pointwise=pointwise)


def plot_posterior(idata, var_names: Sequence[str] | None = None, **kwargs):
    """``az.plot_posterior`` (matplotlib axes)."""
    az = _arviz()
    return az.plot_posterior(idata, var_names=var_names, **kwargs)


def save(idata, path: "str | Path") -> Path:
    """Write InferenceData to NetCDF (``posterior.nc``), atomically
    (:func:`bnas_pyro.atomic_files.atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        idata.to_netcdf(str(tmp))
    return path


def load(path: "str | Path"):
    """Read InferenceData from NetCDF."""
    az = _arviz()
    return az.from_netcdf(str(path))


def compare_loo(data: Mapping[str, Any], ic: str = "loo", **kwargs):
    """``az.compare`` of named InferenceData (PSIS-LOO by default): ArviZ's comparison DataFrame,
    best first (columns ``rank``, ``elpd_loo``, ``p_loo``, ``elpd_diff``, ``weight``, ``se``,
    ``dse``, ...).  :func:`bnas_pyro.analysis.comparison.compare` ranks search results by their
    evidence and keeps this as its predictive check."""
    az = _arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.compare(dict(data), ic=ic, **kwargs)


__all__ = ["compare_loo", "gamma_array", "gamma_var", "load", "loo", "plot_posterior",
           "primitive_dim", "sample_posterior", "save", "summary", "to_inference_data"]
