"""Run configuration of ``bnas-pyro search``: a typed, validated tree read from YAML or JSON.

Every error names the offending key with its full dotted path (``search.epochs``,
``space.options.hidden_primitives[2]``), and is raised at load time, before any data is read or
any model is built: unknown keys (with a "did you mean"), wrong types, unknown data sets, spaces,
primitives, modes, guides and hypergradients.

The defaults are the embedded default search (what ``bnas-pyro search`` with no argument runs):
digits as 64-vectors, the MLP cell space, evidence mode, the structured guide and the hypergradient
the mode asks for (``joint`` for evidence mode: single-level ELBO maximisation, exact there),
150 epochs.

Example YAML (every key optional)::

    seed: 0
    device: cpu
    data: {name: wine, val_fraction: 0.2, test_fraction: 0.2}
    space: {name: mlp_cell, options: {hidden: 32, nodes: 2}}
    model: {precision: group}
    search:
      mode: evidence
      coefficients: {c_temp: 1.0}
      guide: structured
      guide_options: {init_scale: 0.05}
      hypergradient: joint      # default: the mode's own choice (joint; hoag for grow/prune)
      epochs: 100
    retrain: {epochs: 60}
    analysis: {draws: 200, chains: 2}
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from .config_validation import ConfigError, build_dataclass, check_values


# ------------------------------------------------------------------------------ schema
@dataclass
class DataConfig:
    """Which data set and how to split it (see :func:`bnas_pyro.data.load_dataset`).

    ``seed`` seeds the split (default: the run's ``seed``); fix it to compare search seeds on
    one split.  One's own data: ``path`` names a CSV / TSV / .npz / .npy file and ``target`` its
    target column (:func:`bnas_pyro.data.load_file`); ``task`` overrides the inferred task and
    ``categorical`` lists columns to one-hot encode.  For a data set read from a folder
    (``fashion_mnist``), ``path`` is that folder.
    """

    name: str = "digits"
    seed: Optional[int] = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    standardize: Optional[bool] = None
    m: Optional[int] = None
    path: Optional[str] = None
    target: Optional[str] = None
    task: Optional[Literal["classification", "regression"]] = None
    categorical: list = field(default_factory=list)

    @property
    def from_file(self) -> bool:
        """Whether the data come from the file ``path`` (not from a registered data set)."""
        from bnas_pyro.data_files import is_data_file

        return self.path is not None and is_data_file(self.path)

    @property
    def label(self) -> str:
        """The data's name in run-directory names: the file's stem or the data set's name."""
        return Path(self.path).stem if self.from_file else self.name


@dataclass
class SpaceConfig:
    """A built-in space by ``name`` with ``options``, or a ``custom`` SearchSpace dict.

    The default MLP cell offers relu and tanh (no ``linear``) on the input edges: with ``linear``
    there, evidence mode on digits picks the linear model x -linear-> h2 -linear-> y (measured:
    the mixture settles there although a one-hidden-layer relu net fitted alone has a higher
    ELBO), which is a fine Occam answer but not an instructive default.  Put it back with
    ``options: {input_primitives: [relu, tanh, linear]}``.
    """

    name: str = "mlp_cell"
    options: dict = field(default_factory=lambda: {"hidden": 64, "nodes": 2,
                                                   "input_primitives": ["relu", "tanh"]})
    custom: Optional[dict] = None


@dataclass
class ModelConfig:
    """The Pyro model: weight prior, precision level, likelihood noise (regression)."""

    weight_prior: Literal["plain", "scaled"] = "plain"
    precision: Literal["group", "parameter", "shared"] = "group"
    init_log_precision: float = 0.0
    hyperprior: Optional[list] = None
    noise_precision: float = 1.0
    learn_noise_precision: bool = True
    #: ``learned`` (m moves with the search: empirical Bayes) or ``uniform`` (m = 0, fixed)
    structure_prior: Literal["learned", "uniform"] = "learned"
    #: fixed prior logits m (all edges concatenated); overrides ``structure_prior``
    structure_logits: Optional[list] = None


@dataclass
class SearchConfig:
    """The bilevel search: mode, coefficients, guide, hypergradient and budget.

    ``mode`` is a mode of :mod:`bnas_pyro.modes` (``evidence``, ``grow``, ``prune``,
    ``enumerate``, and the classical criteria ``ml``, ``map`` (both with ``guide: delta``) and
    ``holdout``); ``mode_options`` go to :func:`~bnas_pyro.modes.get_mode` (e.g.
    ``anneal_to: 0.1`` anneals c_temp, ``start``/``end`` for grow/prune, ``num_runs`` for
    enumerate); ``coefficients`` are the mode's base coefficients (``evidence``, ``ml``, ``map``
    and ``holdout`` take only ``c_temp`` from them).  ``hypergradient`` defaults to
    the strategy the mode needs (``null``).  ``epochs`` counts passes over the training split; one
    outer step is ``inner_steps`` inner steps (default: one epoch's worth of minibatches).
    ``restarts`` > 1 runs that many searches from new initialisations (seeds ``seed``,
    ``seed + 1``, ...; the data split stays) and keeps the one with the highest final ELBO
    (:func:`bnas_pyro.search.restarts.run_restarts`, METHOD.md section 3),
    ``restart_processes`` of them at a time.
    """

    mode: str = "evidence"
    mode_options: dict = field(default_factory=dict)
    coefficients: dict = field(default_factory=dict)
    #: ``structured`` (default, :class:`bnas_pyro.guides.StructuredGuide`): a discrete q(s) and
    #: q(W | s) at the prior off s, so q(s) sees the Occam factor; q(W) warms up before q(s)
    #: moves, and q(s)'s temperature is annealed to 1 (``structure_warmup``, ``structure_anneal``
    #: in ``guide_options``).  ``mean_field`` is the Concrete relaxation with q(W) independent
    #: of Gamma (its q(Gamma) does not see the Occam factor)
    guide: str = "structured"
    guide_options: dict = field(default_factory=lambda: {"init_scale": 0.05})
    hypergradient: Optional[str] = None
    hypergradient_options: dict = field(default_factory=dict)
    epochs: int = 150
    inner_steps: Optional[int] = None
    batch_size: int = 128
    lr: float = 0.02
    hyper_lr: float = 0.05
    num_particles: int = 1
    validation: bool = False
    #: outer steps between evaluations of the progress bar's ELBO and validation metric (and at
    #: the last step); each costs about as much as a few inner steps
    eval_every: int = 10
    checkpoint_every: int = 10
    restarts: int = 1
    restart_processes: int = 1


@dataclass
class RetrainConfig:
    """Retraining of the derived network (a plain ``nn.Module``) on train + validation.

    ``init``: ``scratch`` (as DARTS retrains its genotype) starts from a fresh random
    initialisation; ``posterior_mean`` starts from E_q[W] (``SearchResult.derive``); ``auto``
    (default) is ``posterior_mean`` with the structured guide, whose E_q[W | s] are the weights of
    the chosen primitives fitted as if chosen, else ``scratch``.  Measured with the mean-field
    guide on its digits structure: scratch 0.961-0.972 test accuracy (mean 0.968 over 6
    retraining seeds), posterior mean 0.961-0.964 (3 seeds; a mean-field q shrinks most means
    towards 0, a poor starting point).  With the structured guide on a 240-row CSV (30 search
    and 30 retraining epochs, seeds 0-2): scratch 0.40 / 0.40 / 0.52 (the linear structures it
    picks train slowly from a small random start), posterior mean 0.98 / 0.98 / 0.94; on digits
    both 0.967.
    """

    enabled: bool = True
    init: Literal["auto", "scratch", "posterior_mean"] = "auto"
    epochs: int = 60
    lr: float = 0.003
    weight_decay: float = 0.0001
    batch_size: int = 128
    use_validation: bool = True


@dataclass
class AnalysisConfig:
    """Posterior draws for ArviZ and the predictive metrics; ``top_k`` structures in result.json;
    ``rank_k`` structures ranked by a refitted evidence estimate (``rank_refit_steps`` steps each,
    then ``rank_draws`` weight draws for the evidence,
    :meth:`bnas_pyro.analysis.result.SearchResult.rank`; 0 turns it off; every guide), each refit
    on minibatches of ``rank_batch_size`` rows where the training split is larger (``null``: full
    batch).

    ``max_rows``: the ELBO estimate, the InferenceData, PSIS-LOO and the ranking's evidence draws
    use a seeded random subset of at most this many training rows (``null``: all), their sums
    scaled to the whole training split (:func:`bnas_pyro.app.runner.analyse`); the test metrics
    always use every test row.
    """

    max_rows: Optional[int] = 5000
    draws: int = 200
    chains: int = 2
    predictive_draws: int = 100
    top_k: int = 5
    plots: bool = True
    rank_k: int = 5
    rank_refit_steps: int = 300
    rank_draws: int = 200
    rank_batch_size: Optional[int] = 256


@dataclass
class RunConfig:
    """The whole run.

    ``output`` is the folder under which run directories are created; ``threads`` is torch's
    intra-op thread count during the run (1 is fastest for these small networks on a shared
    CPU; ``null`` keeps torch's default); ``device`` is any torch device string (``cpu``,
    ``cuda``, ``cuda:1``, ``mps``): the data, model and guide all follow it.
    """

    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    threads: Optional[int] = 1
    output: str = "runs"
    name: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "RunConfig":
        """A copy with dotted-path changes, e.g. ``replace(**{"search.epochs": 2})`` (validated)."""
        data = self.to_dict()
        for dotted, value in changes.items():
            _set_dotted(data, dotted, value)
        return config_from_dict(data)


def default_config() -> RunConfig:
    """The embedded default search (digits, MLP cell space, evidence mode)."""
    return RunConfig()


# ------------------------------------------------------------------------------ reading
def load_config(path: "str | Path | None" = None) -> RunConfig:
    """Read and validate a YAML or JSON file; ``None`` gives the default configuration."""
    if path is None:
        return default_config()
    path = Path(path)
    if not path.exists():
        raise ConfigError("", f"file {str(path)!r} does not exist")
    if not path.is_file():
        raise ConfigError("", f"{str(path)!r} is a {'folder' if path.is_dir() else 'special file'}, "
                              "not a configuration file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("", f"cannot read {str(path)!r}: {err}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - report any parse error with the file name
        raise ConfigError("", f"cannot parse {str(path)!r}: "
                              f"{' '.join(str(err).split())}") from None
    if data is None:
        raise ConfigError("", f"{str(path)!r} is empty: write the keys to change (e.g. "
                              "'search: {epochs: 20}'), or leave out --config for the default "
                              "search")
    if not isinstance(data, Mapping):
        raise ConfigError("", f"{str(path)!r}: the top level must be a mapping of keys, got "
                              f"{type(data).__name__}")
    return config_from_dict(data)


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """Validate a plain dict (as read from YAML/JSON) into a :class:`RunConfig`."""
    if not isinstance(data, Mapping):
        raise ConfigError("", f"the top level must be a mapping of keys, got {type(data).__name__}")
    config = build_dataclass(RunConfig, data, "")
    check_values(config)
    return config


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise ConfigError(dotted, f"'{p}' is not a section")
        node = node[p]
    node[parts[-1]] = value


def dump_config(config: RunConfig, path: "str | Path") -> Path:
    """Write the configuration as YAML (the run directory's ``config.yaml``)."""
    import yaml

    from bnas_pyro.atomic_files import write_text

    return write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


__all__ = ["AnalysisConfig", "ConfigError", "DataConfig", "ModelConfig", "RetrainConfig",
           "RunConfig", "SearchConfig", "SpaceConfig",
           "config_from_dict", "default_config",
           "dump_config", "load_config"]
