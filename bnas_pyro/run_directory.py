"""The run directory: what a search leaves on disk, and ``bnas-pyro report``.

A run directory holds:

==========================  ==============================================================
``config.yaml``             the configuration used (re-runnable with ``--config``)
``result.json``             structure, its probability, top-k structures, metrics (test
                            accuracy or RMSE, NLL, ECE, ELBO, C_param, C_struct, wall time),
                            LOO, collapse statistics, the history, the rho histogram
``checkpoint.pt``           the search state (:mod:`bnas_pyro.checkpoint`; resumable)
``network.pt``              the derived, retrained network: structure, space, state dict and
                            the module itself (``torch.load(..., weights_only=False)["module"]``)
``network.json``            the same network as JSON (``bnas_pyro.load_network``), when it
                            comes from ``SearchResult.derive`` (:mod:`bnas_pyro.export`)
``posterior.nc``            ArviZ InferenceData (:mod:`bnas_pyro.posterior`)
``structure_posterior.png`` q(argmax gamma = l) per edge
``training.png``            ELBO and structure probabilities over training
``rho_histogram.png``       relative densities rho = exp(-mu^2 / (2 sigma^2))
==========================  ==============================================================
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from . import plots
from .checkpoint import CHECKPOINT_NAME
from .config import RunConfig, dump_config

CONFIG_FILE = "config.yaml"
RESULT_FILE = "result.json"
POSTERIOR_FILE = "posterior.nc"
NETWORK_FILE = "network.pt"
NETWORK_JSON = "network.json"
PLOT_FILES = (plots.STRUCTURE_PNG, plots.TRAINING_PNG, plots.RHO_PNG)
RUN_FILES = (CONFIG_FILE, RESULT_FILE, CHECKPOINT_NAME, NETWORK_FILE, POSTERIOR_FILE) + PLOT_FILES


def new_run_dir(config: RunConfig) -> Path:
    """``OUTPUT/NAME-YYYYmmdd-HHMMSS`` (NAME defaults to ``DATA-SPACE``), made unique."""
    name = config.name or f"{config.data.name}-{config.space.name if config.space.custom is None else 'custom'}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(config.output) / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


def _json_default(value: Any):
    if torch.is_tensor(value):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _finite(value: Any) -> Any:
    """JSON has no NaN / inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_run(outcome, draw: bool = True, posterior: bool = True) -> Path:
    """Write the config, result.json, the network, posterior.nc and the plots of a run."""
    from . import posterior as post

    d = Path(outcome.run_dir)
    d.mkdir(parents=True, exist_ok=True)
    dump_config(outcome.config, d / CONFIG_FILE)
    body = {"version": 1, "run_dir": str(d), **outcome.summary}
    (d / RESULT_FILE).write_text(json.dumps(_finite(body), indent=1, default=_json_default))
    if outcome.network is not None:
        torch.save({"structure": outcome.summary["structure"], "space": outcome.summary["space"],
                    "class": type(outcome.network).__qualname__,
                    "state_dict": outcome.network.state_dict(), "module": outcome.network},
                   d / NETWORK_FILE)
        if type(outcome.network).__name__ == "DerivedNetwork":  # from SearchResult.derive()
            from .export import save_network

            save_network(outcome.network, d / NETWORK_JSON)
    if posterior and outcome.idata is not None:
        post.save(outcome.idata, d / POSTERIOR_FILE)
    if draw and outcome.config.analysis.plots:
        draw_plots(d, body)
    return d


def read_result(run_dir: "str | Path") -> dict[str, Any]:
    path = Path(run_dir) / RESULT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {str(run_dir)!r} a run directory?")
    return json.loads(path.read_text())


def draw_plots(run_dir: "str | Path", result: Mapping[str, Any] | None = None) -> list[Path]:
    """(Re)draw the three PNG plots from ``result.json``'s data."""
    d = Path(run_dir)
    result = read_result(d) if result is None else result
    labels = {e["source"] + "->" + e["target"]: [_label(p) for p in e["primitives"]]
              for e in result["space"]["edges"]}
    out = [plots.plot_structure_posterior(result["edge_probabilities"], labels,
                                          d / plots.STRUCTURE_PNG),
           plots.plot_training(result["history"], labels, d / plots.TRAINING_PNG,
                               validation_key=result.get("validation_metric"))]
    rho = result.get("rho_histogram")
    if rho is not None:
        out.append(plots.plot_rho_histogram(rho["bin_edges"], rho["counts"], d / plots.RHO_PNG))
    return out


def _label(spec: Any) -> str:
    from .search_space import PrimitiveSpec

    return PrimitiveSpec.parse(spec).label


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def format_summary(result: Mapping[str, Any]) -> str:
    """The human-readable summary that ``bnas-pyro report`` prints."""
    m = result["metrics"]
    lines = []
    data = result["data"]
    sizes = data["sizes"]
    lines.append(f"run directory: {result.get('run_dir', '?')}")
    lines.append(f"data: {data['name']} ({data['task']}), train/val/test = "
                 f"{sizes['train']}/{sizes['val']}/{sizes['test']}; "
                 f"{result['num_structures']} structures in the space")
    lines.append(f"found structure (probability under q: {result['structure_probability']:.3f}):")
    width = max(len(e) for e in result["structure"])
    for edge, label in result["structure"].items():
        probs = result["edge_probabilities"][edge]
        labels = [_label(p) for e in result["space"]["edges"]
                  if e["source"] + "->" + e["target"] == edge for p in e["primitives"]]
        p = probs[labels.index(label)] if label in labels else float("nan")
        lines.append(f"  {edge:<{width}}  {label:<14} q = {p:.3f}")
    if len(result.get("top_k", [])) > 1:
        lines.append(f"top-{len(result['top_k'])} structures:")
        for i, item in enumerate(result["top_k"], 1):
            choice = ", ".join(f"{k}:{v}" for k, v in item["structure"].items())
            lines.append(f"  {i}. p = {item['probability']:.3f}  {choice}")
    enum = result.get("enumeration")
    if enum:
        lines.append(f"enumeration: {len(enum['structures'])} runs, {enum['num_distinct']} distinct "
                     f"structures; run {enum['chosen_run'] + 1} has the highest ELBO and is reported")
        for i, (st, e) in enumerate(zip(enum["structures"], enum["elbos"]), 1):
            lines.append(f"  run {i}: ELBO {e:.6g}  " + ", ".join(f"{k}:{v}" for k, v in st.items()))
    rest = result.get("restarts")
    if rest:
        lines.append(f"restarts: {len(rest['records'])}; kept restart {rest['best_index']} "
                     "(highest final ELBO)")
        for rec in rest["records"]:
            mark = "*" if rec["index"] == rest["best_index"] else " "
            lines.append(f" {mark} restart {rec['index']} (seed {rec['seed']}): ELBO "
                         f"{rec['elbo']:.6g} +- {rec['elbo_se']:.3g}, q = "
                         f"{rec['structure_probability']:.3f}, "
                         + ", ".join(f"{k}:{v}" for k, v in rec["structure"].items()))
    source = result.get("metrics_source", "")
    if data["task"] == "classification":
        lines.append(f"test ({source}): accuracy {_fmt(m.get('test_accuracy'))}, "
                     f"NLL {_fmt(m.get('test_nll'))}, ECE {_fmt(m.get('test_ece'))}")
        lines.append(f"test (supernet under q): accuracy {_fmt(m.get('supernet_test_accuracy'))}, "
                     f"NLL {_fmt(m.get('supernet_test_nll'))}, ECE {_fmt(m.get('supernet_test_ece'))}")
    else:
        lines.append(f"test ({source}): RMSE {_fmt(m.get('test_rmse'))}, NLL {_fmt(m.get('test_nll'))}")
        lines.append(f"test (supernet under q): RMSE {_fmt(m.get('supernet_test_rmse'))}, "
                     f"NLL {_fmt(m.get('supernet_test_nll'))}")
    lines.append(f"ELBO {_fmt(m.get('elbo'), 6)} (se {_fmt(m.get('elbo_se'), 3)}), "
                 f"elpd_loo {_fmt(m.get('elpd_loo'), 6)}, C_param {_fmt(m.get('c_param'))}, "
                 f"C_struct {_fmt(m.get('c_struct'))}")
    col = result.get("collapse")
    if col:
        lines.append(f"skip/zero choices: {len(col['chose_skip_or_zero'])} of "
                     f"{len(col['edges_with_skip_or_zero'])} edges that offer them"
                     f"{' (collapsed)' if col['collapsed'] else ''}")
        if col.get("disconnected"):
            lines.append("WARNING: the found structure has no path of non-zero operations from the "
                         "input to the output")
    lines.append(f"wall time {_fmt(m.get('wall_time'), 3)} s (search {_fmt(m.get('search_wall_time'), 3)} s)")
    return "\n".join(lines)


def report(run_dir: "str | Path", redraw: bool = True) -> str:
    """The summary of a run directory (and redraw its plots); returns the printed text."""
    result = read_result(run_dir)
    result["run_dir"] = str(run_dir)
    text = format_summary(result)
    if redraw:
        paths = draw_plots(run_dir, result)
        text += "\nplots: " + ", ".join(str(p) for p in paths)
    missing = [f for f in RUN_FILES if not (Path(run_dir) / f).exists()]
    if missing:
        text += "\nmissing files: " + ", ".join(missing)
    return text


__all__ = ["CONFIG_FILE", "NETWORK_FILE", "POSTERIOR_FILE", "RESULT_FILE", "RUN_FILES",
           "draw_plots", "format_summary", "new_run_dir", "read_result", "report", "write_run"]
