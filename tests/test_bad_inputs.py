"""Every bad input is refused with an error of the right type that names the culprit (the key,
argument, file, dtype, edge or row), before any arithmetic: configuration, data, model, guide,
search arguments, checkpoints, run directories and the command line."""

import contextlib
import io
import math

import pytest
import torch
import yaml

from bnas_pyro import BilevelSearch, Coefficients, SearchResult, SearchSpace, compare, fit
from bnas_pyro.analysis.export import build_network
from bnas_pyro.analysis.arviz_data import to_inference_data
from bnas_pyro.analysis.metrics import evaluate_bayesian, evaluate_network
from bnas_pyro.app.cli import main
from bnas_pyro.app.config import ConfigError, config_from_dict, default_config, load_config
from bnas_pyro.app.run_directory import RunDirectoryError, open_run_dir, read_result
from bnas_pyro.atomic_files import FileWriteError, write_text
from bnas_pyro.checks import check_positive
from bnas_pyro.guides import FullRankGuide, MeanFieldGuide
from bnas_pyro.models import BayesianSupernet, CategoricalLikelihood, NormalLikelihood
from bnas_pyro.search.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bnas_pyro.search.restarts import run_restarts


class CliError(Exception):
    """A ``bnas-pyro`` command that failed; the message is its stderr (checked to be one line)."""


def cli(*args: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(list(args))
    text = err.getvalue()
    if status != 0:
        assert text.count("\n") == 1, text      # one line, no traceback
        raise CliError(f"exit {status}: {text}")


def regression(dtype=torch.float32):
    space = SearchSpace({"x": 2, "y": 1}, [("x", "y", ["linear", "zero"])])
    return BayesianSupernet(space, likelihood=NormalLikelihood()).to(dtype)


def classification():
    space = SearchSpace({"x": 2, "y": 3}, [("x", "y", ["linear", "zero"])])
    return BayesianSupernet(space, likelihood=CategoricalLikelihood())


X = torch.randn(12, 2, generator=torch.Generator().manual_seed(0))
Y = X.sum(-1)
LABELS = torch.tensor([0, 1, 2] * 4)


def fit_on(x, y=Y, model=None, guide=None):
    model = regression() if model is None else model
    guide = MeanFieldGuide(model) if guide is None else guide
    fit(model, guide, x, y, num_steps=2, progress=False)


def search_on(x, y=Y, **kwargs):
    model = regression()
    options = dict(inner_steps=1, outer_steps=2, progress=False)
    x_val = kwargs.pop("x_val", None)
    options.update(kwargs)
    search = BilevelSearch(model, MeanFieldGuide(model), Coefficients(), "joint", **options)
    search.run(x, y, x_val, None if x_val is None else Y)


def result_of(model=None):
    model = regression() if model is None else model
    return SearchResult(model, MeanFieldGuide(model), [])


def guide_before_double():
    model = regression()
    guide = MeanFieldGuide(model)
    model.double()
    fit_on(X.double(), Y.double(), model, guide)


def derived(x):
    space = SearchSpace({"x": 2, "y": 1}, [("x", "y", ["linear", "zero"])])
    model = BayesianSupernet(space)
    net = build_network(space, {"x->y": "linear"}, torch.zeros(model.layout.num_parameters))
    evaluate_network(net, x, Y, "regression")


def config(**dotted):
    return default_config().replace(**dotted)


def yaml_file(tmp, text, name="run.yaml"):
    path = tmp / name
    path.write_text(text)
    return path


def truncated_checkpoint(tmp):
    save_checkpoint(tmp, {"step": 1})
    path = tmp / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:20])
    load_checkpoint(tmp)


def checkpoint_of_other_length(tmp):
    model = regression()
    search = BilevelSearch(model, MeanFieldGuide(model), Coefficients(), "joint", inner_steps=1,
                           outer_steps=3, checkpoint_dir=tmp, checkpoint_every=1, progress=False)
    search.run(X, Y)
    short = BilevelSearch(model, MeanFieldGuide(model), Coefficients(), "joint", inner_steps=1,
                          outer_steps=2, checkpoint_dir=tmp, progress=False)
    short.run(X, Y, resume=True)


def checkpoint_of_other_space(tmp):
    model = regression()
    search = BilevelSearch(model, MeanFieldGuide(model), Coefficients(), "joint", inner_steps=1,
                           outer_steps=1, checkpoint_dir=tmp, progress=False)
    search.run(X, Y)
    wide = BayesianSupernet(SearchSpace({"x": 2, "h": 3, "y": 1},
                                        [("x", "h", ["linear", "tanh"]), ("h", "y", ["linear"])]),
                            likelihood=NormalLikelihood())
    BilevelSearch(wide, MeanFieldGuide(wide), Coefficients(), "joint", inner_steps=1,
                  outer_steps=1, checkpoint_dir=tmp, progress=False).run(X, Y, resume=True)


def restarts_from_single_checkpoint(tmp):
    model = regression()
    BilevelSearch(model, MeanFieldGuide(model), Coefficients(), "joint", inner_steps=1,
                  outer_steps=1, checkpoint_dir=tmp, progress=False).run(X, Y)

    def build(seed):
        m = regression()
        return BilevelSearch(m, MeanFieldGuide(m), Coefficients(), "joint", inner_steps=1,
                             outer_steps=1, seed=seed, progress=False)

    run_restarts(build, X, Y, 2, checkpoint_dir=tmp, resume=True, elbo_particles=2)


def result_file(tmp, text):
    (tmp / "result.json").write_text(text)
    read_result(tmp)


def run_dir_with(tmp, *files):
    for f in files:
        (tmp / f).write_text("x")
    return tmp


# (id, call(tmp), exception type, the words the message must contain)
CASES = [
    # ---------------------------------------------------------------- configuration values
    ("val_fraction 0", lambda t: config(**{"data.val_fraction": 0}), ConfigError, ["data.val_fraction"]),
    ("val_fraction 1", lambda t: config(**{"data.val_fraction": 1.0}), ConfigError, ["data.val_fraction"]),
    ("test_fraction 0", lambda t: config(**{"data.test_fraction": 0}), ConfigError, ["data.test_fraction"]),
    ("fractions sum to 1", lambda t: config(**{"data.val_fraction": 0.5, "data.test_fraction": 0.5}),
     ConfigError, ["data.val_fraction"]),
    ("checkpoint_every 0", lambda t: config(**{"search.checkpoint_every": 0}), ConfigError,
     ["search.checkpoint_every"]),
    ("init_scale 0", lambda t: config(**{"search.guide_options": {"init_scale": 0}}), ConfigError,
     ["search.guide_options.init_scale"]),
    ("init_scale < 0", lambda t: config(**{"search.guide_options": {"init_scale": -0.1}}), ConfigError,
     ["search.guide_options.init_scale"]),
    ("init_scale text", lambda t: config(**{"search.guide_options": {"init_scale": "big"}}),
     ConfigError, ["search.guide_options.init_scale"]),
    ("epochs 0", lambda t: config(**{"search.epochs": 0}), ConfigError, ["search.epochs"]),
    ("epochs 2.5", lambda t: config(**{"search.epochs": 2.5}), ConfigError, ["search.epochs", "integer"]),
    ("batch_size 0", lambda t: config(**{"search.batch_size": 0}), ConfigError, ["search.batch_size"]),
    ("lr < 0", lambda t: config(**{"search.lr": -1}), ConfigError, ["search.lr"]),
    ("lr text", lambda t: config(**{"search.lr": "fast"}), ConfigError, ["search.lr", "number"]),
    ("hyper_lr inf", lambda t: config(**{"search.hyper_lr": math.inf}), ConfigError, ["search.hyper_lr"]),
    ("init_log_precision nan", lambda t: config(**{"model.init_log_precision": math.nan}),
     ConfigError, ["model.init_log_precision"]),
    ("noise_precision 0", lambda t: config(**{"model.noise_precision": 0}), ConfigError,
     ["model.noise_precision"]),
    ("weight_decay < 0", lambda t: config(**{"retrain.weight_decay": -1}), ConfigError,
     ["retrain.weight_decay"]),
    ("draws 1", lambda t: config(**{"analysis.draws": 1}), ConfigError, ["analysis.draws"]),
    ("chains 0", lambda t: config(**{"analysis.chains": 0}), ConfigError, ["analysis.chains"]),
    ("rank draws 1", lambda t: config(**{"analysis.rank_draws": 1}), ConfigError,
     ["analysis.rank_draws"]),
    ("draws < chains", lambda t: config(**{"analysis.draws": 3, "analysis.chains": 4}), ConfigError,
     ["analysis.draws"]),
    ("threads 0", lambda t: config(threads=0), ConfigError, ["threads"]),
    ("restarts 0", lambda t: config(**{"search.restarts": 0}), ConfigError, ["search.restarts"]),
    ("seed text", lambda t: config(seed="x"), ConfigError, ["seed"]),
    ("hyperprior length", lambda t: config(**{"model.hyperprior": [1.0]}), ConfigError,
     ["model.hyperprior"]),
    ("precision literal", lambda t: config(**{"model.precision": "every"}), ConfigError,
     ["model.precision", "group"]),
    ("device", lambda t: config(device="gpu0"), ConfigError, ["device", "gpu0"]),
    ("dtype", lambda t: config(dtype="int8"), ConfigError, ["dtype", "float32"]),
    # ---------------------------------------------------------------- configuration names
    ("unknown key", lambda t: config_from_dict({"search": {"epoch": 3}}), ConfigError,
     ["search.epoch", "did you mean 'search.epochs'"]),
    ("unknown section", lambda t: config_from_dict({"serch": {}}), ConfigError, ["serch"]),
    ("section not a mapping", lambda t: config_from_dict({"search": 3}), ConfigError, ["search"]),
    ("top level a list", lambda t: config_from_dict([1, 2]), ConfigError, ["top level"]),
    ("data set", lambda t: config(**{"data.name": "wines"}), ConfigError, ["data.name", "wines", "wine"]),
    ("mode", lambda t: config(**{"search.mode": "evidense"}), ConfigError, ["search.mode", "evidence"]),
    ("guide", lambda t: config(**{"search.guide": "meanfield"}), ConfigError, ["search.guide"]),
    ("hypergradient", lambda t: config(**{"search.hypergradient": "hoagg"}), ConfigError,
     ["search.hypergradient", "hoag"]),
    ("primitive", lambda t: config(**{"space.options": {"hidden_primitives": ["relu", "rleu"]}}),
     ConfigError, ["space.options.hidden_primitives[1]", "rleu"]),
    ("coefficient name", lambda t: config(**{"search.coefficients": {"c_tmp": 1.0}}), ConfigError,
     ["search.coefficients.c_tmp", "c_temp"]),
    ("coefficient text", lambda t: config(**{"search.coefficients": {"c_temp": "hot"}}), ConfigError,
     ["search.coefficients.c_temp"]),
    ("coefficient range", lambda t: config(**{"search.coefficients": {"c_temp": -1}}), ConfigError,
     ["search.coefficients", "c_temp"]),
    # ---------------------------------------------------------------- configuration files
    ("empty file", lambda t: load_config(yaml_file(t, "")), ConfigError, ["run.yaml", "empty"]),
    ("comments only", lambda t: load_config(yaml_file(t, "# nothing\n")), ConfigError,
     ["run.yaml", "empty"]),
    ("file is a folder", lambda t: load_config(t), ConfigError, ["is a folder"]),
    ("missing file", lambda t: load_config(t / "nope.yaml"), ConfigError, ["nope.yaml", "does not exist"]),
    ("bad YAML", lambda t: load_config(yaml_file(t, "search: {epochs: [")), ConfigError,
     ["run.yaml", "cannot parse"]),
    ("bad JSON", lambda t: load_config(yaml_file(t, "{", "run.json")), ConfigError,
     ["run.json", "cannot parse"]),
    ("YAML scalar", lambda t: load_config(yaml_file(t, "3\n")), ConfigError, ["run.yaml", "mapping"]),
    # ---------------------------------------------------------------- the command line
    ("cli --config folder", lambda t: cli("search", "--config", str(t), "--print-config"), CliError,
     ["exit 2", "is a folder"]),
    ("cli --out file", lambda t: cli("search", "--config", str(yaml_file(t, "seed: 1\n")),
                                     "--out", str(yaml_file(t, "x", "taken.txt")), "--quiet"),
     CliError, ["exit 2", "taken.txt", "not a folder"]),
    ("cli --set no =", lambda t: cli("search", "--set", "search.epochs", "--print-config"), CliError,
     ["search.epochs", "KEY=VALUE"]),
    ("cli --set unknown", lambda t: cli("search", "--set", "search.epoch=3", "--print-config"),
     CliError, ["search.epoch"]),
    ("cli --set not a section", lambda t: cli("search", "--set", "seed.x=3", "--print-config"),
     CliError, ["seed.x"]),
    ("cli report no run", lambda t: cli("report", str(t / "nowhere")), CliError,
     ["exit 2", "nowhere"]),
    ("cli resume no run", lambda t: cli("resume", str(t)), CliError, ["exit 2", "config.yaml"]),
    ("cli resume with --config", lambda t: cli("search", "--resume", str(t), "--config", "a.yaml"),
     CliError, ["--config"]),
    ("cli occupied --out", lambda t: cli("search", "--config", str(yaml_file(t, "seed: 1\n")),
                                         "--out", str(run_dir_with(t, "checkpoint.pt")), "--quiet"),
     CliError, ["checkpoint.pt", "--force", "resume"]),
    # ---------------------------------------------------------------- data into fit / search
    ("x int64", lambda t: fit_on(X.long()), TypeError, ["x", "torch.int64", "x.float()"]),
    ("x float64, model float32", lambda t: fit_on(X.double()), TypeError,
     ["x", "torch.float64", "torch.float32", "x.float()"]),
    ("x float16", lambda t: fit_on(X.half()), TypeError, ["x", "torch.float16", "x.float()"]),
    ("x float32, model float64", lambda t: fit_on(X, Y.double(), regression(torch.float64)),
     TypeError, ["x", "x.double()"]),
    ("y float64, model float32", lambda t: fit_on(X, Y.double()), TypeError,
     ["y", "torch.float64", "y.float()"]),
    ("guide before model.double()", lambda t: guide_before_double(), TypeError,
     ["guide", "torch.float32", "torch.float64", "guide.double()"]),
    ("x on another device", lambda t: fit_on(X.to("meta"), Y), ValueError,
     ["x is on device meta", "model is on cpu", "x.to('cpu')"]),
    ("y on another device", lambda t: fit_on(X, Y.to("meta")), ValueError,
     ["y is on device meta", "y.to('cpu')"]),
    ("guide on another device", lambda t: fit_on(X, Y, guide=MeanFieldGuide(regression()).to("meta")),
     ValueError, ["guide", "device meta", "guide.to('cpu')"]),
    ("x empty", lambda t: fit_on(X[:0], Y[:0]), ValueError, ["x", "empty", "0 rows"]),
    ("x scalar", lambda t: fit_on(torch.tensor(1.0)), ValueError, ["x", "scalar"]),
    ("x numpy", lambda t: fit_on(X.numpy()), TypeError, ["x", "torch.Tensor", "ndarray"]),
    ("x a list", lambda t: fit_on(X.tolist()), TypeError, ["x", "torch.Tensor", "list"]),
    ("y rows", lambda t: fit_on(X, Y[:5]), ValueError, ["x has 12 rows", "y has 5"]),
    ("x columns", lambda t: fit_on(torch.randn(12, 3)), ValueError, ["x has shape (12, 3)", "(batch, 2)"]),
    ("x NaN", lambda t: fit_on(torch.where(torch.arange(24).reshape(12, 2) == 7, math.nan, X)),
     ValueError, ["row 3", "column 1"]),
    ("y inf", lambda t: fit_on(X, torch.where(torch.arange(12) == 4, math.inf, Y)), ValueError,
     ["y", "row 4"]),
    ("labels float", lambda t: fit_on(X, LABELS.float(), classification()), TypeError,
     ["labels", "integers"]),
    ("label out of range", lambda t: fit_on(X, torch.where(torch.arange(12) == 2, 3, LABELS),
                                            classification()), ValueError, ["y[2] = 3", "[0, 3)"]),
    ("search x float64", lambda t: search_on(X.double()), TypeError, ["x", "torch.float64"]),
    ("search x empty", lambda t: search_on(X[:0], Y[:0]), ValueError, ["x", "empty"]),
    ("search x_val float64", lambda t: search_on(X, x_val=X.double()), TypeError,
     ["x_val", "x_val.float()"]),
    # ---------------------------------------------------------------- analysis and networks
    ("to_inference_data x int", lambda t: to_inference_data(result_of(), X.long(), Y, num_draws=4),
     TypeError, ["x", "torch.int64"]),
    ("to_inference_data guide dtype", lambda t: to_inference_data(
        SearchResult(regression(torch.float64), MeanFieldGuide(regression()), []), num_draws=4),
     TypeError, ["guide", "torch.float32", "torch.float64"]),
    ("compare x float64", lambda t: compare([result_of(), result_of()], X.double(), Y, num_draws=4),
     TypeError, ["x", "torch.float64"]),
    ("predictive x empty", lambda t: evaluate_bayesian(regression(), MeanFieldGuide(regression()),
                                                       X[:0], Y[:0], "regression", num_draws=2),
     ValueError, ["x", "empty"]),
    ("network columns", lambda t: derived(torch.randn(12, 5)), ValueError,
     ["x has shape (12, 5)", "network's input", "(batch, 2)"]),
    ("network dtype", lambda t: derived(X.double()), TypeError, ["x", "torch.float64", "network"]),
    ("network x int", lambda t: derived(X.long()), TypeError, ["x", "torch.int64", "x.float()"]),
    # ---------------------------------------------------------------- guides and search arguments
    ("MeanFieldGuide init_scale 0", lambda t: MeanFieldGuide(regression(), init_scale=0), ValueError,
     ["init_scale", "0"]),
    ("MeanFieldGuide init_scale < 0", lambda t: MeanFieldGuide(regression(), init_scale=-1.0),
     ValueError, ["init_scale", "-1.0"]),
    ("FullRankGuide init_scale 0", lambda t: FullRankGuide(regression(), init_scale=0.0), ValueError,
     ["init_scale"]),
    ("MeanFieldGuide init_scale text", lambda t: MeanFieldGuide(regression(), init_scale="0.1"), TypeError,
     ["init_scale"]),
    ("outer_steps 0", lambda t: search_on(X, outer_steps=0), ValueError, ["outer_steps", "0"]),
    ("inner_steps < 0", lambda t: search_on(X, inner_steps=-1), ValueError, ["inner_steps"]),
    ("search checkpoint_every 0", lambda t: search_on(X, checkpoint_every=0), ValueError, ["checkpoint_every"]),
    ("L -inf", lambda t: search_on(X, torch.full((12,), 1e30)), FloatingPointError,
     ["outer step 0", "L (the inner objective", "-inf"]),
    ("Q -inf, no inner step", lambda t: search_on(X, torch.full((12,), 1e30), inner_steps=0),
     FloatingPointError, ["outer step 0", "Q (the outer objective"]),
    ("check_positive nan", lambda t: check_positive("lr", math.nan), ValueError, ["lr", "nan"]),
    # ---------------------------------------------------------------- checkpoints and files
    ("truncated checkpoint", truncated_checkpoint, CheckpointError, ["checkpoint.pt", "not a readable"]),
    ("checkpoint not a state", lambda t: (torch.save([1, 2], t / "checkpoint.pt"), load_checkpoint(t)),
     CheckpointError, ["checkpoint.pt", "list"]),
    ("checkpoint lacks keys", lambda t: (torch.save({"step": 1}, t / "checkpoint.pt"),
                                         load_checkpoint(t)), CheckpointError,
     ["checkpoint.pt", "lacks", "guide"]),
    ("checkpoint past the end", checkpoint_of_other_length, CheckpointError,
     ["checkpoint.pt", "outer step 3", "only 2"]),
    ("checkpoint of another space", checkpoint_of_other_space, CheckpointError,
     ["checkpoint.pt", "does not fit"]),
    ("restarts resume a single search", restarts_from_single_checkpoint, CheckpointError,
     ["checkpoint.pt", "single search"]),
    ("write under a file", lambda t: write_text(yaml_file(t, "x", "f") / "out.json", "{}"),
     FileWriteError, ["out.json", "cannot write"]),
    ("result truncated", lambda t: result_file(t, '{"format": "bnas-pyro.search-res'), RunDirectoryError,
     ["result.json", "not valid JSON"]),
    ("result other format", lambda t: result_file(t, '{"a": 1}'), RunDirectoryError,
     ["result.json", "format"]),
    ("result missing", lambda t: read_result(t), FileNotFoundError, ["result.json"]),
    ("run dir is a file", lambda t: open_run_dir(yaml_file(t, "x", "file"), default_config()),
     RunDirectoryError, ["file", "not a folder"]),
    ("run dir occupied", lambda t: open_run_dir(run_dir_with(t, "result.json"), default_config()),
     RunDirectoryError, ["result.json", "--force"]),
    ("resume a finished run", lambda t: open_run_dir(run_dir_with(t, "config.yaml", "result.json"),
                                                     resume=True), RunDirectoryError,
     ["finished run", "report"]),
    ("resume and force", lambda t: open_run_dir(t, resume=True, force=True), RunDirectoryError,
     ["--resume and --force"]),
    ("resume bad config.yaml", lambda t: open_run_dir(run_dir_with(t, "config.yaml"), resume=True),
     RunDirectoryError, ["config.yaml"]),
]


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("call, kind, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_by_name(call, kind, words, tmp_path):
    with pytest.raises(kind) as info:
        call(tmp_path)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "\n" not in message.strip()


@pytest.mark.parametrize("text, key, value", [
    ("search: {lr: 1e-3}", "search.lr", 1e-3),
    ("search: {epochs: 1e2}", "search.epochs", 100),
    ("search: {checkpoint_every: 2.0}", "search.checkpoint_every", 2),
    ("search: {coefficients: {c_temp: 5e-1}}", "search.coefficients", {"c_temp": 0.5}),
    ("search: {guide_options: {init_scale: 1e-3}}", "search.guide_options", {"init_scale": 1e-3}),
    ("model: {noise_precision: 1e6}", "model.noise_precision", 1e6),
    ("retrain: {weight_decay: 1E-4}", "retrain.weight_decay", 1e-4),
])
def test_numbers_in_any_notation_are_accepted(text, key, value, tmp_path):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; --set reads values as YAML: both give the
    number to every numeric key, integer keys included when the number is whole."""
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    section, name = key.split(".")
    from_file = getattr(getattr(load_config(path), section), name)
    raw = yaml.safe_load(text)[section][name]
    from_set = getattr(getattr(default_config().replace(**{key: raw}), section), name)
    assert from_file == value and from_set == value
    assert type(from_file) is type(value)
