"""One's own data in, predictions out: CSV / TSV / .npz / .npy files through the CLI, the
named errors of bad files, and the exported network on raw features."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bnas_pyro import load_network
from bnas_pyro.analysis.export import NetworkFileError, VERSION
from bnas_pyro.app.cli import main
from bnas_pyro.data import load_file
from bnas_pyro.data_files import DataFileError, read_data_file

FAST = ["--set", "space.options={hidden: 8}", "--set", "search.epochs=30",
        "--set", "search.batch_size=64", "--set", "retrain.epochs=30",
        "--set", "analysis.draws=10", "--set", "analysis.predictive_draws=10",
        "--set", "analysis.plots=false", "--set", "analysis.rank_k=0", "-q"]


def _write_csv(path: Path, header, rows, delimiter=","):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def _classification_csv(path: Path, n: int = 240) -> Path:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3)) * [1.0, 10.0, 100.0] + [0.0, 50.0, -300.0]
    score = x[:, 0] + (x[:, 1] - 50) / 10
    label = np.where(score > 0.6, "spruce", np.where(score < -0.6, "oak", "birch"))
    return _write_csv(path, ["girth", "height", "altitude", "tree"],
                      [[f"{a:.6g}", f"{b:.6g}", f"{c:.6g}", l] for (a, b, c), l in zip(x, label)])


def _regression_csv(path: Path, n: int = 200) -> Path:
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=(n, 2))
    y = 1000.0 + 300.0 * np.tanh(x[:, 0]) + 50.0 * x[:, 1] + 20.0 * rng.standard_normal(n)
    return _write_csv(path, ["u", "v", "price"], [[f"{a:.6g}", f"{b:.6g}", f"{c:.6g}"]
                                                 for (a, b), c in zip(x, y)])


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def classification_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls")
    path = _classification_csv(tmp / "trees.csv")
    out = tmp / "run"
    assert main(["search", "--data", str(path), "--target", "tree", "--out", str(out)] + FAST) == 0
    return path, out


def test_csv_with_string_labels_searched_through_the_cli(classification_run):
    path, out = classification_run
    result = json.loads((out / "result.json").read_text())
    data = result["analysis"]["data"]
    assert data["name"] == "trees" and data["task"] == "classification"
    assert data["class_names"] == ["birch", "oak", "spruce"]
    assert data["sizes"] == {"train": 144, "val": 48, "test": 48}
    assert isinstance(result["warnings"], list)
    # three classes of roughly a third each: a search that learnt anything beats 0.6
    assert result["analysis"]["metrics"]["test_accuracy"] > 0.8


def test_load_network_on_raw_features_reproduces_the_run_accuracy_exactly(classification_run):
    path, out = classification_run
    result = json.loads((out / "result.json").read_text())
    raw = load_file(path, "tree", seed=0, standardize=False, dtype=torch.float64)
    net = load_network(out / "network.json")
    assert net.class_names == ["birch", "oak", "spruce"] and net.task == "classification"
    probs = net.predict_proba(raw.x_test)
    accuracy = float((probs.argmax(-1) == raw.y_test).double().mean())
    assert accuracy == result["analysis"]["metrics"]["test_accuracy"]
    # the labels come back by name; raw features of another scale are what the file holds
    names = net.predict(raw.x_test[:5])
    assert names == [net.class_names[i] for i in raw.y_test[:5].tolist()] or all(
        n in net.class_names for n in names)
    assert raw.x_test[:, 2].abs().mean() > 100  # truly raw (altitude around -300)
    # and network.pt's module is the same self-contained network
    module = torch.load(out / "network.pt", weights_only=False)["module"]
    assert torch.equal(module(raw.x_test).argmax(-1), probs.argmax(-1))


def test_regression_csv_predicts_in_the_file_units(tmp_path):
    path = _regression_csv(tmp_path / "prices.csv")
    out = tmp_path / "run"
    assert main(["search", "--data", str(path), "--target", "price", "--out", str(out)] + FAST) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["analysis"]["data"]["task"] == "regression"
    raw = load_file(path, "price", seed=0, standardize=False, dtype=torch.float64)
    net = load_network(out / "network.json")
    pred = net.predict(raw.x_test)
    rmse = float((pred.double() - raw.y_test).pow(2).mean().sqrt())
    assert rmse == pytest.approx(result["analysis"]["metrics"]["test_rmse"], rel=1e-5)
    # the target's sd is about 230: the network explains most of it
    assert rmse < 0.5 * float(raw.y_test.std())


# ---------------------------------------------------------------------------- file formats
def test_task_inference_and_class_names(tmp_path):
    ints = _write_csv(tmp_path / "i.csv", ["a", "y"], [[i * 0.1, i % 3 + 5] for i in range(30)])
    t = read_data_file(ints, "y")
    assert t.task == "classification" and t.class_names == [5, 6, 7]
    assert t.y.tolist()[:4] == [0, 1, 2, 0]
    floats = _write_csv(tmp_path / "f.csv", ["a", "y"], [[i, i * 0.5] for i in range(30)])
    assert read_data_file(floats, "y").task == "regression"
    assert read_data_file(ints, "y", task="regression").task == "regression"
    tsv = _write_csv(tmp_path / "t.tsv", ["a", "b", "y"], [[i, -i, "no" if i % 2 else "yes"]
                                                           for i in range(20)], delimiter="\t")
    t = read_data_file(tsv, "y")
    assert t.x.shape == (20, 2) and t.class_names == ["no", "yes"]
    semi = _write_csv(tmp_path / "s.csv", ["a", "b", "y"], [[i, 2 * i, i % 2] for i in range(20)],
                      delimiter=";")
    assert read_data_file(semi, "y").x.shape == (20, 2)


def test_categorical_columns_are_one_hot_encoded_only_when_asked(tmp_path):
    path = _write_csv(tmp_path / "c.csv", ["colour", "size", "y"],
                      [[["red", "green", "blue"][i % 3], i, i % 2] for i in range(30)])
    with pytest.raises(DataFileError, match=r"c\.csv, line 2, column 'colour': non-numeric value 'red'"):
        read_data_file(path, "y")
    t = read_data_file(path, "y", categorical=["colour"])
    assert t.feature_names == ["colour=blue", "colour=green", "colour=red", "size"]
    np.testing.assert_array_equal(t.x[:3, :3], [[0, 0, 1], [0, 1, 0], [1, 0, 0]])


def test_npz_and_npy_pairs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_file(tmp_path / "d.npz", seed=0)
    assert d.task == "classification" and d.class_names == [0, 1] and d.sizes["train"] == 24
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "yr.npy", x[:, 0] * 2.5)
    d = load_file(tmp_path / "X.npy", "yr.npy", seed=0)
    assert d.task == "regression" and d.input_shape == (3,)
    col = load_file(tmp_path / "X.npy", "2", seed=0, standardize=False)
    assert col.input_shape == (2,) and col.task == "regression"
    images = rng.standard_normal((30, 5, 5)).astype(np.float32)
    np.savez(tmp_path / "im.npz", x=images, label=np.array(["a", "b", "c"] * 10))
    d = load_file(tmp_path / "im.npz", "label")
    assert d.input_shape == (1, 5, 5) and d.class_names == ["a", "b", "c"]


# ---------------------------------------------------------------------------- bad files
BAD_CASES = {
    "missing value": (["a", "b", "y"], [[1, 2, "x"], [3, "", "y"], [4, 5, "x"]],
                      r"missing\.csv, line 3, column 'b': missing value ''"),
    "NA value": (["a", "b", "y"], [[1, 2, "x"], [3, 4, "y"], [4, "NA", "x"]],
                 r"na\.csv, line 4, column 'b': missing value 'NA'"),
    "non-numeric column": (["a", "b", "y"], [[1, "2", "x"], [3, "tall", "y"]],
                           r"text\.csv, line 3, column 'b': non-numeric value 'tall'"),
    "missing target": (["a", "b", "c"], [[1, 2, 3], [4, 5, 6]],
                       r"notarget\.csv, column 'y': no target column 'y'; the columns are a, b, c"),
    "single class": (["a", "y"], [[i, "same"] for i in range(20)],
                     r"oneclass\.csv, column 'y': the target has a single class \('same'\)"),
    "ragged row": (["a", "b", "y"], [[1, 2, "x"], [3, "y"]],
                   r"ragged\.csv, line 3: 2 cells, the header has 3"),
}
FILES = {"missing value": "missing", "NA value": "na", "non-numeric column": "text",
         "missing target": "notarget", "single class": "oneclass", "ragged row": "ragged"}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_each_bad_file_gives_its_named_error(tmp_path, case):
    header, rows, message = BAD_CASES[case]
    path = _write_csv(tmp_path / f"{FILES[case]}.csv", header, rows)
    with pytest.raises(DataFileError, match=message):
        read_data_file(path, "y")


def test_too_few_rows_for_the_splits_is_named(tmp_path):
    path = _write_csv(tmp_path / "tiny.csv", ["a", "y"], [[i, i % 2] for i in range(3)])
    with pytest.raises(DataFileError, match=r"tiny\.csv: 3 rows are too few for the splits.*"
                                            r"train/val/test = 1/1/1"):
        load_file(path, "y")
    # enough rows in all, but the stratified split leaves a class out of training
    rare = _write_csv(tmp_path / "rare.csv", ["a", "y"], [[i, i % 2] for i in range(4)])
    with pytest.raises(DataFileError, match=r"rare\.csv, column 'y': class\(es\) \[0\] have "
                                            r"no row in the training part"):
        load_file(rare, "y")
    ok = _write_csv(tmp_path / "ok.csv", ["a", "y"], [[i, i % 2] for i in range(10)])
    assert load_file(ok, "y").sizes == {"train": 6, "val": 2, "test": 2}


def test_bad_arrays_are_named(tmp_path):
    x = np.ones((10, 2))
    x[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(10) % 2)
    with pytest.raises(DataFileError, match=r"nan\.npz, column 'x\[1\]': missing or non-finite "
                                            r"value nan in row 3"):
        read_data_file(tmp_path / "nan.npz")
    np.savez(tmp_path / "noy.npz", x=np.ones((10, 2)), t=np.arange(10))
    with pytest.raises(DataFileError, match=r"noy\.npz, column 'y': no target array 'y'; the "
                                            r"archive holds x, t"):
        read_data_file(tmp_path / "noy.npz")
    np.save(tmp_path / "X.npy", np.ones((10, 2)))
    with pytest.raises(DataFileError, match=r"X\.npy: target 'nope\.npy' is neither"):
        read_data_file(tmp_path / "X.npy", "nope.npy")


def test_cli_bad_file_exits_2_naming_file_line_and_column(tmp_path, capsys):
    path = _write_csv(tmp_path / "bad.csv", ["a", "y"], [[1, "x"], ["?", "y"]])
    assert main(["search", "-q", "--data", str(path), "--target", "y"]) == 2
    err = capsys.readouterr().err
    assert "data.path" in err and "bad.csv, line 3, column 'a': missing value '?'" in err
    assert main(["search", "-q", "--data", str(path), "--set", "data.name=wine"]) == 2
    assert "data.name" in capsys.readouterr().err
    assert main(["search", "-q", "--set", "data.target=y"]) == 2
    assert "data.target" in capsys.readouterr().err
    # a refused data file leaves no run directory behind
    out = tmp_path / "runs"
    assert main(["search", "-q", "--data", str(path), "--target", "y", "--set",
                 f"output={out}"]) == 2
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------------------- network files
def _small_network_json(tmp_path):
    from bnas_pyro import SearchSpace
    from bnas_pyro.analysis.export import build_network, save_network

    space = SearchSpace.from_dict({"nodes": {"x": 3, "h": 4, "y": 2},
                                   "edges": [("x", "h", ["tanh"]), ("h", "y", ["linear"])]})
    torch.manual_seed(0)
    from bnas_pyro.supernet import ParameterLayout

    weights = torch.randn(ParameterLayout(space).num_parameters)
    net = build_network(space, {"x->h": "tanh", "h->y": "linear"}, weights)
    net.set_preprocessing("classification", torch.tensor([1.0, 2.0, 3.0]),
                          torch.tensor([2.0, 4.0, 8.0]), class_names=["no", "yes"])
    return net, save_network(net, tmp_path / "net.json")


def test_network_preprocessing_round_trips(tmp_path):
    net, path = _small_network_json(tmp_path)
    loaded = load_network(path)
    x = torch.randn(7, 3, dtype=torch.float64) * 5 + 2
    assert torch.equal(loaded(x), net(x))
    z = ((x - torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
         / torch.tensor([2.0, 4.0, 8.0], dtype=torch.float64)).float()
    assert torch.equal(loaded(x), net.core(z))
    assert loaded.class_names == ["no", "yes"]
    assert json.loads(path.read_text())["version"] == VERSION


def test_old_truncated_nan_and_undeclared_networks_are_refused(tmp_path):
    net, path = _small_network_json(tmp_path)
    data = json.loads(path.read_text())
    old = dict(data, version=1)
    del old["preprocessing"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(NetworkFileError, match=r"old\.json: derived-network version 1 stores no "
                                               r"input standardisation"):
        load_network(tmp_path / "old.json")
    legacy = load_network(tmp_path / "old.json", legacy=True)
    assert legacy.x_mean is None
    (tmp_path / "cut.json").write_text(path.read_text()[:200])
    with pytest.raises(NetworkFileError, match=r"cut\.json: not valid JSON"):
        load_network(tmp_path / "cut.json")
    nan = json.loads(path.read_text())
    nan["edges"][1]["state"]["weight"]["data"][0] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(nan))
    with pytest.raises(NetworkFileError, match=r"nan\.json: edge 1 \(h->y\), linear weight "
                                               r"'weight': 1 non-finite"):
        load_network(tmp_path / "nan.json")
    stray = json.loads(path.read_text())
    stray["edges"][1]["target"] = "z"
    (tmp_path / "stray.json").write_text(json.dumps(stray))
    with pytest.raises(NetworkFileError, match=r"stray\.json: edge 1 \(h->z\): node 'z' is not "
                                               r"declared"):
        load_network(tmp_path / "stray.json")


def test_wrong_number_of_input_columns_names_expected_and_actual(tmp_path):
    net, path = _small_network_json(tmp_path)
    with pytest.raises(ValueError, match=r"expects inputs of columns 3 per row, got 5"):
        load_network(path)(torch.randn(4, 5))


# ---------------------------------------------------------------------------- conventions
def test_version_and_python_m(tmp_path):
    from bnas_pyro import __version__

    out = subprocess.run([sys.executable, "-m", "bnas_pyro", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"bnas-pyro {__version__}"
    out = subprocess.run([sys.executable, "-m", "bnas_pyro", "list", "datasets"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "fashion_mnist" in out.stdout and "digits" in out.stdout


def test_py_typed_ships_with_the_package():
    import bnas_pyro

    assert (Path(bnas_pyro.__file__).parent / "py.typed").exists()
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"bnas_pyro" = ["py.typed"]' in text
