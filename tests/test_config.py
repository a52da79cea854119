"""Configuration: defaults, YAML/JSON round trips, and errors that name the offending key."""

import json

import pytest
import yaml

from bnas_pyro.app.config import (ConfigError, RunConfig, config_from_dict, default_config,
                                  dump_config, load_config)


def _error(data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return info.value


def test_default_config_is_the_documented_default_search():
    c = default_config()
    assert (c.data.name, c.space.name, c.search.mode) == ("digits", "mlp_cell", "evidence")
    assert (c.search.guide, c.device, c.seed) == ("structured", "cpu", 0)
    assert c.search.hypergradient is None  # the mode's own: joint for evidence mode
    from bnas_pyro.app.builders import make_schedule, search_strategy

    assert search_strategy(c, make_schedule(c)) == "joint"
    prune = c.replace(**{"search.mode": "prune"})
    assert search_strategy(prune, make_schedule(prune)) == "hoag"
    forced = prune.replace(**{"search.hypergradient": "greedy"})
    assert search_strategy(forced, make_schedule(forced)) == "greedy"
    assert load_config(None) == c


def test_yaml_and_json_round_trip(tmp_path):
    c = default_config().replace(**{"search.epochs": 7, "data.name": "wine", "seed": 3})
    assert (c.search.epochs, c.data.name, c.seed) == (7, "wine", 3)
    path = dump_config(c, tmp_path / "c.yaml")
    assert load_config(path) == c
    (tmp_path / "c.json").write_text(json.dumps(c.to_dict()))
    assert load_config(tmp_path / "c.json") == c
    # a partial file: everything else keeps its default
    (tmp_path / "p.yaml").write_text("search:\n  epochs: 3\n  lr: 1e-3\n")
    p = load_config(tmp_path / "p.yaml")
    assert p.search.epochs == 3 and p.search.lr == 0.001  # YAML 1.1 reads 1e-3 as a string
    assert p.search.batch_size == RunConfig().search.batch_size


@pytest.mark.parametrize("data,key,words", [
    ({"epochs": 3}, "epochs", "unknown key"),
    ({"search": {"epoch": 3}}, "search.epoch", "did you mean 'search.epochs'"),
    ({"data": {"nmae": "wine"}}, "data.nmae", "did you mean 'data.name'"),
    ({"search": {"epochs": "ten"}}, "search.epochs", "expected an integer, got 'ten'"),
    ({"search": {"epochs": 2.5}}, "search.epochs", "expected an integer"),
    ({"search": {"epochs": True}}, "search.epochs", "expected an integer"),
    ({"search": {"lr": "fast"}}, "search.lr", "expected a number"),
    ({"data": {"standardize": "yes"}}, "data.standardize", "expected true or false"),
    ({"search": {"coefficients": [1, 2]}}, "search.coefficients", "expected a mapping"),
    ({"dtype": "float16"}, "dtype", "must be one of"),
    ({"search": "fast"}, "search", "expected a mapping"),
    ({"search": {"epochs": 0}}, "search.epochs", "must be >= 1"),
    ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}}, "data.val_fraction", "< 1"),
])
def test_bad_keys_and_types_name_the_key(data, key, words):
    err = _error(data)
    assert err.key == key
    assert f"'{key}'" in str(err) and words in str(err)


@pytest.mark.parametrize("data,key,words", [
    ({"data": {"name": "mnist"}}, "data.name", "unknown data set 'mnist'"),
    ({"space": {"name": "resnet"}}, "space.name", "unknown search space 'resnet'"),
    ({"space": {"options": {"hidden_primitives": ["relu", "tahn"]}}},
     "space.options.hidden_primitives[1]", "unknown primitive 'tahn' (did you mean 'tanh'?)"),
    ({"space": {"custom": {"nodes": {"x": 2, "y": 1},
                           "edges": [{"source": "x", "target": "y", "primitives": ["linear", "sine"]}]}}},
     "space.custom.edges[0].primitives[1]", "unknown primitive 'sine'"),
    ({"search": {"mode": "evidnce"}}, "search.mode", "unknown mode 'evidnce'"),
    ({"search": {"guide": "laplace"}}, "search.guide", "unknown guide 'laplace'"),
    ({"search": {"hypergradient": "adam"}}, "search.hypergradient", "unknown hypergradient 'adam'"),
    ({"search": {"coefficients": {"c_tmp": 0.5}}}, "search.coefficients.c_tmp",
     "did you mean 'search.coefficients.c_temp'"),
    ({"search": {"coefficients": {"c_temp": -1}}}, "search.coefficients", "c_temp"),
    ({"model": {"hyperprior": [1.0]}}, "model.hyperprior", "lambda_1, lambda_2"),
    ({"device": "gpu0"}, "device", "not a torch device"),
])
def test_unknown_names_fail_at_once_with_the_key(data, key, words):
    err = _error(data)
    assert err.key == key and words in str(err)


def test_error_lists_what_is_available():
    err = _error({"data": {"name": "mnist"}})
    assert "digits" in str(err) and "wine" in str(err)
    err = _error({"search": {"hypergradient": "adam"}})
    assert "joint" in str(err) and "greedy" in str(err)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.json").write_text("{oops")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(tmp_path / "broken.json")


def test_guide_options_are_checked_before_the_search():
    from bnas_pyro.app.builders import build_data, build_guide, build_model, build_search_space

    c = default_config().replace(**{"data.name": "wine", "search.guide_options": {"init_scael": 0.1}})
    data = build_data(c)
    model = build_model(c, build_search_space(c, data), data)
    with pytest.raises(ConfigError) as info:
        build_guide(c, model, data)
    assert info.value.key == "search.guide_options" and "init_scael" in str(info.value)


def test_the_guide_registry_lives_beside_the_guides():
    from bnas_pyro import guides

    assert guides.available_guides() == ["mean_field", "full_rank", "delta", "multistart",
                                        "structured"]
    assert guides.guide_class("delta") is guides.DeltaGuide
    with pytest.raises(KeyError, match="unknown guide 'nope'; available: delta, full_rank"):
        guides.guide_class("nope")
    with pytest.raises(ValueError, match="already registered"):
        guides.register_guide("delta", guides.MeanFieldGuide)
    guides.register_guide("mean_field_again", guides.MeanFieldGuide)
    try:
        config = config_from_dict({"search": {"guide": "mean_field_again"}})
        assert config.search.guide == "mean_field_again"
    finally:
        guides.GUIDES.unregister("mean_field_again")
    with pytest.raises(ConfigError, match="search.guide"):
        config_from_dict({"search": {"guide": "mean_field_again"}})
