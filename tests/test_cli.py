"""The ``bnas-pyro`` command line end to end on a reduced budget: the run directory's files and
their contents, ``report``, ``list``, config errors and reproducibility."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bnas_pyro.app.cli import main
from bnas_pyro.app.config import default_config, load_config
from bnas_pyro.app.run_directory import RUN_FILES

TINY = {
    "seed": 1,
    "data": {"name": "wine"},
    "space": {"name": "mlp_cell", "options": {"hidden": 8}},
    "search": {"epochs": 6, "batch_size": 64, "lr": 0.03, "checkpoint_every": 5},
    "retrain": {"epochs": 30, "batch_size": 32},
    "analysis": {"draws": 40, "chains": 2, "predictive_draws": 20, "top_k": 3,
                 "rank_refit_steps": 60},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = root / "run"
    assert main(["search", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    return out, cfg


def test_run_directory_holds_every_file(run):
    out, _ = run
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    for png in ("structure_posterior.png", "training.png", "rho_histogram.png"):
        head = (out / png).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 5000


def test_config_used_is_written_and_reloads(run):
    out, cfg = run
    used = load_config(out / "config.yaml")
    assert used == load_config(cfg)
    assert used.data.name == "wine" and used.search.epochs == 6


def test_result_json_contents(run):
    out, _ = run
    r = json.loads((out / "result.json").read_text())
    from bnas_pyro.search_space import SearchSpace

    space = SearchSpace.from_dict(r["space"])
    probs = r["edge_probabilities"]
    # the structure is the argmax of q per edge, and its probability the product of the maxima
    for e in space.edges:
        p = probs[e.name]
        assert abs(sum(p) - 1) < 1e-5
        assert r["structure"][e.name] == e.labels[int(np.argmax(p))]
    assert math.isclose(r["probability"], math.prod(max(p) for p in probs.values()),
                        rel_tol=1e-9)
    top = r["top_structures"]
    assert 1 <= len(top) <= 3 and top[0]["structure"] == r["structure"]
    assert all(a["probability"] >= b["probability"] for a, b in zip(top, top[1:]))
    m = r["analysis"]["metrics"]
    keys = ["test_accuracy", "test_nll", "test_ece", "elbo", "wall_time", "supernet_test_accuracy",
            "elpd_loo", "c_param", "c_struct"]
    for key in keys:
        assert m[key] is not None and math.isfinite(m[key]), key
    assert 0.8 <= m["test_accuracy"] <= 1.0  # wine: even a linear model gets ~0.97
    assert 0 < m["test_nll"] < 1.0 and 0 <= m["test_ece"] <= 1
    assert m["elbo"] < 0
    assert m["c_param"] >= 0
    assert 0 <= m["c_struct"] <= math.log(r["num_structures"]) + 1e-6
    assert m["wall_time"] >= m["search_wall_time"] > 0
    assert r["analysis"]["data"]["sizes"] == {"train": 106, "val": 36, "test": 36}
    # one history record per outer step (one epoch each: 106 rows in batches of 64 = 2 steps)
    assert [h["step"] for h in r["history"]] == list(range(6))
    # the progress callback evaluates every search.eval_every (10) outer steps and at the last
    evaluated = [h["step"] for h in r["history"] if "elbo" in h["extra"] and "val_acc" in h["extra"]]
    assert evaluated == [0, 5]
    # the structures ranked by refitted evidence (the default mean-field guide has no bound per
    # structure of its own): q's top 5, ordered by evidence + log prior, each with its error
    ranking = r["analysis"]["ranking"]
    assert len(ranking) == 5 and ranking[0]["bound"] in ("elbo", "importance")
    scores = [e["evidence"] + e["log_prior"] for e in ranking]
    assert scores == sorted(scores, reverse=True)
    for e in ranking:
        assert set(e["structure"]) == set(r["structure"])
        assert math.isfinite(e["evidence"]) and e["evidence_se"] > 0 and 0 <= e["q"] <= 1
        assert e["evidence"] == e["elbo" if e["bound"] == "elbo" else "iw_bound"]
    assert all(0.5 <= e["beats_next"] <= 1 for e in ranking[:-1]) and ranking[-1]["beats_next"] is None
    assert {tuple(sorted(t["structure"].items())) for t in top} <= {
        tuple(sorted(e["structure"].items())) for e in ranking}
    rho = r["analysis"]["rho_histogram"]
    assert len(rho["counts"]) == len(rho["bin_edges"]) - 1
    from bnas_pyro.supernet import ParameterLayout

    assert sum(rho["counts"]) == rho["num_weights"] == ParameterLayout(space).num_parameters


def test_checkpoint_network_and_posterior_files_are_usable(run):
    out, _ = run
    r = json.loads((out / "result.json").read_text())
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == len(r["history"]) == 6
    # the saved network reproduces the reported test accuracy
    from bnas_pyro.data import load_dataset

    saved = torch.load(out / "network.pt", weights_only=False)
    assert saved["structure"] == r["structure"]
    net = saved["module"]
    assert isinstance(net, torch.nn.Module)
    assert saved["state_dict"].keys() == net.state_dict().keys()
    # the network takes raw features: it carries the standardisation of the training split
    d = load_dataset("wine", seed=1, standardize=False, dtype=torch.float64)
    with torch.no_grad():
        acc = float((net(d.x_test).argmax(-1) == d.y_test).double().mean())
    assert math.isclose(acc, r["analysis"]["metrics"]["test_accuracy"], abs_tol=1e-12)
    # the network is also written as JSON (bnas_pyro.analysis.export), and reloads exactly
    from bnas_pyro.analysis.export import load_network

    again = load_network(out / "network.json")
    with torch.no_grad():
        assert torch.equal(again(d.x_test), net(d.x_test))
    from bnas_pyro.analysis import arviz_data as post

    idata = post.load(out / "posterior.nc")
    assert idata.log_likelihood["obs"].shape == (2, 20, 106)
    assert post.loo(idata).n_data_points == 106


def test_report_prints_the_summary_and_redraws(run, capsys):
    out, _ = run
    r = json.loads((out / "result.json").read_text())
    (out / "training.png").unlink()
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "found structure" in text and "accuracy" in text
    assert "ranked by evidence" in text
    first = r["analysis"]["ranking"][0]
    assert f"1. evidence {first['evidence']:.2f} +- {first['evidence_se']:.2f}" in text
    for edge, label in r["structure"].items():
        assert edge in text and label in text
    assert (out / "training.png").is_file()
    assert "missing files" not in text


def test_report_of_a_ranking_on_a_row_subset(run, tmp_path, capsys):
    """Evidence draws on a subset of the rows (analysis.max_rows) carry no IW bound: result.json
    holds null there and the report says what the evidence was estimated on."""
    import shutil

    out, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    r = json.loads((copy / "result.json").read_text())
    for entry in r["analysis"]["ranking"]:
        entry["iw_bound"] = entry["iw_se"] = entry["iw_ess"] = None
    (copy / "result.json").write_text(json.dumps(r))
    assert main(["report", str(copy), "--no-plots"]) == 0
    text = capsys.readouterr().out
    first = r["analysis"]["ranking"][0]
    assert f"(ELBO {first['elbo']:.2f} on a subset of the rows)" in text


def test_same_config_same_result(run, tmp_path):
    out, cfg = run
    again = tmp_path / "again"
    assert main(["search", "--config", str(cfg), "--out", str(again), "-q"]) == 0
    a = json.loads((out / "result.json").read_text())
    b = json.loads((again / "result.json").read_text())
    assert a["edge_probabilities"] == b["edge_probabilities"]
    for key in ("test_accuracy", "test_nll", "supernet_test_nll", "elbo", "elpd_loo"):
        assert a["analysis"]["metrics"][key] == b["analysis"]["metrics"][key], key


def test_config_errors_exit_2_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  epochs: ten\n")
    assert main(["search", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "search.epochs" in err and "expected an integer" in err
    assert not (tmp_path / "r").exists()  # failed before anything was written
    assert main(["search", "--set", "data.name=mnist"]) == 2
    assert "data.name" in capsys.readouterr().err
    assert main(["search", "--set", "space.options.hidden_primitives=[relu, tahn]"]) == 2
    assert "space.options.hidden_primitives[1]" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_print_config_is_the_embedded_default(capsys):
    assert main(["search", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == default_config().to_dict()


def test_list_names_everything_a_config_can_use(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for word in ("digits", "digits_images", "diabetes", "annals", "mlp_cell", "conv_cell",
                 "conv_3x3", "skip_connect", "evidence", "mean_field", "joint", "greedy"):
        assert word in text
    assert main(["list", "primitives"]) == 0
    assert "datasets" not in capsys.readouterr().out


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "bnas-pyro"
    if not exe.exists():
        pytest.skip("the package is not installed in this interpreter's environment")
    done = subprocess.run([str(exe), "list", "spaces"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "conv_cell" in done.stdout


def test_dtype_follows_the_config(tmp_path):
    """Nothing is pinned to float32 / CPU: with dtype float64 the data, model, guide and derived
    network all run in float64 (the same path a ``device: cuda`` config takes)."""
    out = tmp_path / "f64"
    args = ["search", "-q", "--out", str(out), "--set", "dtype=float64", "--set", "data.name=wine",
            "--set", "space.options={hidden: 4}", "--set", "search.epochs=1", "--set", "analysis.rank_k=0",
            "--set", "retrain.epochs=1", "--set", "analysis.draws=4",
            "--set", "analysis.predictive_draws=2", "--set", "analysis.plots=false"]
    assert main(args) == 0
    saved = torch.load(out / "network.pt", weights_only=False)
    assert all(p.dtype == torch.float64 for p in saved["module"].parameters())
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert all(v.dtype == torch.float64 for v in state["guide"].values() if v.is_floating_point())
    assert not (out / "training.png").exists()


def _structure_of_checkpoint(run_dir):
    """The structure of the search state in ``run_dir/checkpoint.pt``, loaded by the resume path
    (``BilevelSearch.load_state_dict``) into a search built afresh from the run's config.yaml."""
    from bnas_pyro.app.builders import build_parts
    from bnas_pyro.app.config import load_config
    from bnas_pyro.app.drivers import make_search
    from bnas_pyro.search.checkpoint import load_checkpoint

    parts = build_parts(load_config(run_dir / "config.yaml"))
    search = make_search(parts.config, parts.model, parts.guide, parts.mode, parts.strategy,
                         parts.inner_steps, parts.outer_steps, None, False, [])
    search.prepare(parts.data.x_train, parts.data.y_train)
    state = load_checkpoint(run_dir)
    search.load_state_dict(state)
    assert search.step == len(state["history"]) == parts.outer_steps
    return search.run(parts.data.x_train, parts.data.y_train).structure


def test_enumerate_mode_through_the_cli(tmp_path, capsys):
    base = ["search", "-q", "--set", "data.name=wine", "--set", "space.options={hidden: 4}",
            "--set", "search.mode=enumerate", "--set", "search.epochs=3", "--set", "analysis.rank_k=0", "--set", "retrain.epochs=2",
            "--set", "analysis.draws=4", "--set", "analysis.predictive_draws=2",
            "--set", "analysis.plots=false"]
    # 96 structures: enumerating all of them by default would take long, so num_runs is required
    assert main(base + ["--out", str(tmp_path / "no")]) == 2
    assert "search.mode_options.num_runs" in capsys.readouterr().err
    out = tmp_path / "enum"
    assert main(base + ["--set", "search.mode_options={num_runs: 2}", "--out", str(out)]) == 0
    r = json.loads((out / "result.json").read_text())
    e = r["info"]["enumeration"]
    assert len(e["structures"]) == len(e["elbos"]) == 2
    assert e["chosen_run"] == int(np.argmax(e["elbos"]))
    assert r["structure"] == e["structures"][e["chosen_run"]]
    assert r["analysis"]["mode"] == "enumerate" and r["info"]["strategy"] == "joint"
    assert _structure_of_checkpoint(out) == r["structure"]


def test_regression_run_reports_rmse_in_original_units(tmp_path):
    out = tmp_path / "diabetes"
    args = ["search", "-q", "--out", str(out), "--set", "data.name=diabetes",
            "--set", "space.options={hidden: 8}", "--set", "search.epochs=40", "--set", "analysis.rank_k=0",
            "--set", "retrain.epochs=40", "--set", "analysis.draws=10",
            "--set", "analysis.predictive_draws=10", "--set", "analysis.plots=false"]
    assert main(args) == 0
    r = json.loads((out / "result.json").read_text())
    m = r["analysis"]["metrics"]
    assert "test_accuracy" not in m and "test_ece" not in m
    from bnas_pyro.data import load_dataset

    d = load_dataset("diabetes", seed=0)
    y = d.y_test * d.y_std + d.y_mean
    baseline = float((y - float(d.y_mean)).pow(2).mean().sqrt())  # predict the training mean: ~77
    # diabetes targets are in [25, 346]; a fitted network beats the constant predictor
    assert 40 < m["test_rmse"] < 0.95 * baseline
    assert 40 < m["supernet_test_rmse"] < baseline
    assert math.isfinite(m["test_nll"]) and 4 < m["test_nll"] < 7  # nats, original units
    assert r["analysis"]["validation_metric"] == "val_rmse"


def test_restarts_keep_the_highest_elbo(tmp_path, capsys):
    out = tmp_path / "restarts"
    args = ["search", "-q", "--out", str(out), "--set", "data.name=wine",
            "--set", "space.options={hidden: 4}", "--set", "search.epochs=4", "--set", "analysis.rank_k=0",
            "--set", "search.restarts=3", "--set", "retrain.epochs=2", "--set", "analysis.draws=4",
            "--set", "analysis.predictive_draws=2", "--set", "analysis.plots=false"]
    assert main(args) == 0
    r = json.loads((out / "result.json").read_text())
    records = r["info"]["restarts"]
    assert [rec["seed"] for rec in records] == [0, 1, 2]
    best = r["info"]["best_restart"]
    assert best == int(np.argmax([rec["elbo"] for rec in records]))
    assert r["structure"] == records[best]["structure"]
    assert _structure_of_checkpoint(out) == r["structure"]
    assert "kept restart" in capsys.readouterr().out
    # one split for all restarts: the test split's size is the run's
    assert r["analysis"]["data"]["sizes"]["test"] == 36


def test_posterior_mean_init_saves_the_derived_network(tmp_path):
    out = tmp_path / "pm"
    args = ["search", "-q", "--out", str(out), "--set", "data.name=wine", "--set", "seed=2",
            "--set", "space.options={hidden: 4}", "--set", "search.epochs=3", "--set", "analysis.rank_k=0",
            "--set", "retrain.init=posterior_mean", "--set", "retrain.epochs=0",
            "--set", "analysis.draws=4", "--set", "analysis.predictive_draws=2",
            "--set", "analysis.plots=false"]
    assert main(args) == 0
    from bnas_pyro.analysis.result import SearchResult
    from bnas_pyro.app.builders import build_data, build_guide, build_model, build_search_space

    config = load_config(out / "config.yaml")
    data = build_data(config)
    model = build_model(config, build_search_space(config, data), data)
    guide = build_guide(config, model, data)
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    guide.load_state_dict(state["guide"])
    model.hyper.load_state_dict(state["hyper"])
    r = json.loads((out / "result.json").read_text())
    expected = SearchResult(model, guide, []).derive(r["structure"])
    saved = torch.load(out / "network.pt", weights_only=False)["module"]
    with torch.no_grad():
        # core: the network on standardised inputs (saved(raw x) standardises itself)
        assert torch.allclose(saved.core(data.x_test), expected(data.x_test), atol=1e-6)
    assert r["analysis"]["derived"]["init"] == "posterior_mean"


def test_criteria_modes_through_the_cli(tmp_path, capsys):
    base = ["search", "-q", "--set", "data.name=wine", "--set", "space.options={hidden: 4}",
            "--set", "search.epochs=3", "--set", "retrain.epochs=2", "--set", "analysis.draws=4", "--set", "analysis.rank_k=0",
            "--set", "analysis.predictive_draws=2", "--set", "analysis.plots=false"]
    # MAP is defined with point-mass weights: a mean-field guide is refused by name
    assert main(base + ["--set", "search.mode=map", "--out", str(tmp_path / "no")]) == 2
    assert "config key 'search.guide'" in capsys.readouterr().err
    out = tmp_path / "map"
    assert main(base + ["--set", "search.mode=map", "--set", "search.guide=delta",
                        "--set", "search.guide_options={}",
                        "--out", str(out)]) == 0
    r = json.loads((out / "result.json").read_text())
    # h is not fitted: every record holds the initial log precisions 0 and logits 0
    for record in r["history"]:
        assert all(v == 0.0 for v in record["hyper"]["log_precision"])
        assert all(v == 0.0 for v in record["hyper"]["structure_logits"])
    # hold-out: Q is the validation log-likelihood, moved by the greedy hypergradient
    out = tmp_path / "holdout"
    assert main(base + ["--set", "search.mode=holdout", "--out", str(out)]) == 0
    r = json.loads((out / "result.json").read_text())
    assert r["info"]["strategy"] == "greedy" and r["analysis"]["mode"] == "holdout"


def test_report_refuses_a_result_of_another_format_by_name(tmp_path, capsys):
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "result.json").write_text(json.dumps({"version": 1, "metrics": {}}))
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "result.json is not a bnas-pyro run result" in err and str(run_dir) in err
    (run_dir / "result.json").write_text(json.dumps({"format": "bnas-pyro.search-result",
                                                      "version": 1}))
    assert main(["report", str(run_dir)]) == 2
    assert "format version 1" in capsys.readouterr().err
    (run_dir / "result.json").write_text('{"format": "bnas-pyro.search-res')
    assert main(["report", str(run_dir)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
