"""The run directory: what a search leaves on disk, and ``bnas-pyro report``.

A run directory holds:

==========================  ==============================================================
``config.yaml``             the configuration used (re-runnable with ``--config``)
``result.json``             the search result (``SearchResult.to_dict``: structure, its
                            probability, per-edge probabilities, top-k structures, h, the
                            history; restarts or enumeration runs in ``info``) and an
                            ``analysis`` block: metrics (test accuracy or RMSE, NLL, ECE, ELBO,
                            C_param, C_struct, wall time), LOO, collapse statistics, rho
``checkpoint.pt``           the final search state, ``BilevelSearch.state_dict()`` (of the kept
                            restart or enumeration run), loadable by ``load_state_dict``
``network.pt``              the derived, retrained network: structure, space, state dict and
                            the module itself (``torch.load(..., weights_only=False)["module"]``)
``network.json``            the same network as JSON (``bnas_pyro.load_network``), when it
                            comes from ``SearchResult.derive`` (:mod:`bnas_pyro.analysis.export`)
``posterior.nc``            ArviZ InferenceData (:mod:`bnas_pyro.analysis.arviz_data`)
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

from bnas_pyro import atomic_files
from bnas_pyro.analysis import arviz_data
from bnas_pyro.analysis.diagnostics import warning_lines
from bnas_pyro.analysis.export import save_network
from bnas_pyro.analysis.result import RESULT_FORMAT, RESULT_FORMAT_VERSION
from bnas_pyro.search.checkpoint import CHECKPOINT_NAME
from bnas_pyro.search_space import PrimitiveSpec

from . import plots
from .config import ConfigError, RunConfig, dump_config, load_config

CONFIG_FILE = "config.yaml"
RESULT_FILE = "result.json"
POSTERIOR_FILE = "posterior.nc"
NETWORK_FILE = "network.pt"
NETWORK_JSON = "network.json"
PLOT_FILES = (plots.STRUCTURE_PNG, plots.TRAINING_PNG, plots.RHO_PNG)
RUN_FILES = (CONFIG_FILE, RESULT_FILE, CHECKPOINT_NAME, NETWORK_FILE, POSTERIOR_FILE) + PLOT_FILES


def new_run_dir(config: RunConfig) -> Path:
    """``OUTPUT/NAME-YYYYmmdd-HHMMSS`` (NAME defaults to ``DATA-SPACE``), made unique."""
    name = config.name or f"{config.data.label}-{config.space.name if config.space.custom is None else 'custom'}"
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


def write_config(config: RunConfig, run_dir: "str | Path") -> Path:
    """Write ``config.yaml`` (first thing a run does, so a run directory always says what it is),
    atomically."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    return dump_config(config, d / CONFIG_FILE)


def held_run_files(run_dir: "str | Path") -> list[str]:
    """The files of a run that ``run_dir`` already holds (empty for a new or empty folder)."""
    d = Path(run_dir)
    return [f for f in RUN_FILES + (NETWORK_JSON,) if (d / f).exists()]


def open_run_dir(run_dir: "str | Path", config: RunConfig | None = None, resume: bool = False,
                 force: bool = False) -> tuple[Path, RunConfig]:
    """Check ``run_dir`` for a new run (``config``) or for resuming the run it holds, and write
    ``config.yaml``; returns the folder and the configuration to run.

    A new run refuses a folder that already holds a run unless ``force`` (its run files are then
    removed); resuming needs the run's ``config.yaml`` and refuses a finished run
    (``result.json`` is written last).  Errors are :class:`RunDirectoryError`, naming the folder.
    """
    d = Path(run_dir)
    if d.exists() and not d.is_dir():
        raise RunDirectoryError(f"{d} exists and is not a folder: give --out a new or empty "
                                "folder, or a run directory")
    if resume:
        if force:
            raise RunDirectoryError("--resume and --force exclude each other: --resume continues "
                                    f"the run in {d}, --force starts it over")
        if not (d / CONFIG_FILE).is_file():
            raise RunDirectoryError(f"{d} is not a run directory to resume: it has no {CONFIG_FILE}")
        if (d / RESULT_FILE).exists():
            raise RunDirectoryError(f"{d} holds a finished run ({RESULT_FILE} exists): nothing to "
                                    f"resume; `bnas-pyro report {d}` prints it")
        try:
            saved = load_config(d / CONFIG_FILE)
        except ConfigError as err:
            raise RunDirectoryError(f"{d / CONFIG_FILE}: {err}") from None
        if config is not None and config != saved:
            raise RunDirectoryError(f"{d} was started with another configuration than the one "
                                    f"given; resume it with its own {CONFIG_FILE} (no --config / "
                                    "--set)")
        return d, saved
    if config is None:
        raise ValueError("a new run needs its configuration")
    held = held_run_files(d)
    if held:
        if not force:
            raise RunDirectoryError(f"{d} already holds a run ({', '.join(held)}): continue it "
                                    f"with `bnas-pyro resume {d}`, or pass --force to start over")
        for name in held:
            (d / name).unlink()
    write_config(config, d)
    return d, config


def write_run(outcome, draw: bool = True, posterior: bool = True) -> Path:
    """Write the config, result.json, the network, posterior.nc and the plots of a run."""
    d = Path(outcome.run_dir)
    write_config(outcome.config, d)
    body = {**outcome.summary, "run_dir": str(d)}
    atomic_files.write_text(d / RESULT_FILE, json.dumps(_finite(body), indent=1,
                                                        default=_json_default))
    if outcome.network is not None:
        atomic_files.torch_save({"structure": outcome.summary["structure"],
                                 "space": outcome.summary["space"],
                                 "class": type(outcome.network).__qualname__,
                                 "state_dict": outcome.network.state_dict(),
                                 "module": outcome.network}, d / NETWORK_FILE)
        if type(outcome.network).__name__ == "DerivedNetwork":  # from SearchResult.derive()
            save_network(outcome.network, d / NETWORK_JSON)
    if posterior and outcome.idata is not None:
        arviz_data.save(outcome.idata, d / POSTERIOR_FILE)
    if draw and outcome.config.analysis.plots:
        draw_plots(d, body)
    return d


class RunDirectoryError(ValueError):
    """A run directory whose ``result.json`` this version cannot read (the message names it)."""


def read_result(run_dir: "str | Path") -> dict[str, Any]:
    """``result.json`` of a run directory, checked to be a run result of this format version."""
    path = Path(run_dir) / RESULT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {str(run_dir)!r} a run directory?")
    if not path.is_file():
        raise RunDirectoryError(f"{path} is not a file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirectoryError(f"{path} is not valid JSON, truncated or damaged? ({err})") from None
    except OSError as err:
        raise RunDirectoryError(f"cannot read {path}: {err.strerror or err}") from None
    if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
        raise RunDirectoryError(f"{path} is not a bnas-pyro run result (no \"format\": "
                                f"\"{RESULT_FORMAT}\")")
    if data.get("version") != RESULT_FORMAT_VERSION or "analysis" not in data:
        raise RunDirectoryError(f"{path} has format version {data.get('version')!r}"
                                f"{'' if 'analysis' in data else ' without an analysis block'}; "
                                f"this bnas-pyro reads run results of version "
                                f"{RESULT_FORMAT_VERSION}: re-run the search")
    missing = [k for k in RESULT_KEYS if k not in data]
    analysis = data["analysis"]
    if not isinstance(analysis, dict):
        missing.append("analysis (not a mapping)")
    else:
        missing += [f"analysis.{k}" for k in ANALYSIS_KEYS if k not in analysis]
    if missing:
        raise RunDirectoryError(f"{path} is incomplete: it lacks {', '.join(missing)}")
    return data


#: the entries ``report`` reads from ``result.json`` and its ``analysis`` block
RESULT_KEYS = ("structure", "probability", "edge_probabilities", "space", "history",
               "num_structures")
ANALYSIS_KEYS = ("data", "metrics")


def draw_plots(run_dir: "str | Path", result: Mapping[str, Any] | None = None) -> list[Path]:
    """(Re)draw the three PNG plots from ``result.json``'s data."""
    d = Path(run_dir)
    result = read_result(d) if result is None else result
    labels = {e["source"] + "->" + e["target"]: [_label(p) for p in e["primitives"]]
              for e in result["space"]["edges"]}
    out = [plots.plot_structure_posterior(result["edge_probabilities"], labels,
                                          d / plots.STRUCTURE_PNG),
           plots.plot_training(result["history"], labels, d / plots.TRAINING_PNG,
                               validation_key=result.get("analysis", {}).get("validation_metric"))]
    rho = result.get("analysis", {}).get("rho_histogram")
    if rho is not None:
        out.append(plots.plot_rho_histogram(rho["bin_edges"], rho["counts"], d / plots.RHO_PNG))
    return out


def _label(spec: Any) -> str:
    return PrimitiveSpec.parse(spec).label


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def format_summary(result: Mapping[str, Any]) -> str:
    """The human-readable summary that ``bnas-pyro report`` prints."""
    a = result["analysis"]
    m = a["metrics"]
    lines = warning_lines(result)
    data = a["data"]
    sizes = data["sizes"]
    lines.append(f"run directory: {result.get('run_dir', '?')}")
    lines.append(f"data: {data['name']} ({data['task']}), train/val/test = "
                 f"{sizes['train']}/{sizes['val']}/{sizes['test']}; "
                 f"{result['num_structures']} structures in the space")
    lines.append(f"found structure (probability under q: {result['probability']:.3f}):")
    width = max(len(e) for e in result["structure"])
    for edge, label in result["structure"].items():
        probs = result["edge_probabilities"][edge]
        labels = [_label(p) for e in result["space"]["edges"]
                  if e["source"] + "->" + e["target"] == edge for p in e["primitives"]]
        p = probs[labels.index(label)] if label in labels else float("nan")
        lines.append(f"  {edge:<{width}}  {label:<14} q = {p:.3f}")
    top = result.get("top_structures", [])
    if len(top) > 1:
        lines.append(f"top-{len(top)} structures:")
        for i, item in enumerate(top, 1):
            choice = ", ".join(f"{k}:{v}" for k, v in item["structure"].items())
            lines.append(f"  {i}. p = {item['probability']:.3f}  {choice}")
    ranking = a.get("ranking")
    if ranking:
        bound = ranking[0].get("bound", "elbo")
        what = ("importance-weighted bound" if bound == "importance" else "ELBO")
        lines.append(f"ranked by evidence ({what} of q(W | s) refitted at the vertex, "
                     f"{ranking[0].get('refit', '')}; +- its standard error; P = probability it "
                     f"beats the next):")
        multi = {e["source"] + "->" + e["target"] for e in result["space"]["edges"]
                 if len(e["primitives"]) > 1}
        for i, r in enumerate(ranking, 1):
            beats = "" if r["beats_next"] is None else f"  P = {r['beats_next']:.3f}"
            other = ""
            if "elbo" in r and r.get("iw_bound") is not None:
                other = (f"  (ELBO {r['elbo']:.2f}, IW {r['iw_bound']:.2f}, "
                         f"ESS {r['iw_ess']:.0f})")
            elif "elbo" in r:   # evidence draws on a subset of the rows: no IW bound
                other = f"  (ELBO {r['elbo']:.2f} on a subset of the rows)"
            choice = ", ".join(f"{k}:{v}" for k, v in r["structure"].items() if k in multi)
            lines.append(f"  {i}. evidence {r['evidence']:.2f} +- {r['evidence_se']:.2f}  "
                         f"q = {r['q']:.3f}{beats}{other}  {choice}")
    loo_block = a.get("loo") or {}
    if loo_block.get("pareto_k_over_0.7"):
        k_max = loo_block.get("pareto_k_max")
        k_max = "inf" if k_max is None else f"{k_max:.2f}"
        lines.append(f"warning: PSIS-LOO has {loo_block['pareto_k_over_0.7']} points with Pareto k "
                     f"> 0.7 (max {k_max}): elpd_loo is unreliable")
    info = result.get("info", {})
    enum = info.get("enumeration")
    if enum:
        lines.append(f"enumeration: {len(enum['structures'])} runs, {enum['num_distinct']} distinct "
                     f"structures; run {enum['chosen_run'] + 1} has the highest ELBO and is reported")
        for i, (st, e) in enumerate(zip(enum["structures"], enum["elbos"]), 1):
            lines.append(f"  run {i}: ELBO {e:.6g}  " + ", ".join(f"{k}:{v}" for k, v in st.items()))
    records = info.get("restarts")
    if records:
        best = info.get("best_restart")
        lines.append(f"restarts: {len(records)}; kept restart {best} (highest final ELBO)")
        for rec in records:
            mark = "*" if rec["index"] == best else " "
            lines.append(f" {mark} restart {rec['index']} (seed {rec['seed']}): ELBO "
                         f"{rec['elbo']:.6g} +- {rec['elbo_se']:.3g}, q = "
                         f"{rec['structure_probability']:.3f}, "
                         + ", ".join(f"{k}:{v}" for k, v in rec["structure"].items()))
    source = a.get("metrics_source", "")
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
    col = a.get("collapse")
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
    try:
        text = format_summary(result)
        paths = draw_plots(run_dir, result) if redraw else []
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as err:
        raise RunDirectoryError(f"{Path(run_dir) / RESULT_FILE} is damaged: "
                                f"{type(err).__name__} {err} while reading it") from None
    if redraw:
        text += "\nplots: " + ", ".join(str(p) for p in paths)
    missing = [f for f in RUN_FILES if not (Path(run_dir) / f).exists()]
    if missing:
        text += "\nmissing files: " + ", ".join(missing)
    return text


__all__ = ["CONFIG_FILE", "NETWORK_FILE", "POSTERIOR_FILE", "RESULT_FILE", "RUN_FILES",
           "RunDirectoryError",
           "draw_plots", "format_summary", "held_run_files", "new_run_dir", "open_run_dir",
           "read_result", "report", "write_config",
           "write_run"]
