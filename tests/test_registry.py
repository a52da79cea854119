"""Every name a configuration can give is looked up the same way (bnas_pyro.registry)."""

import pytest

from bnas_pyro import guides
from bnas_pyro.data import DATASETS
from bnas_pyro.hypergradients import STRATEGIES, get_strategy
from bnas_pyro.modes import MODES, get_mode
from bnas_pyro.primitives import build_primitive
from bnas_pyro.primitives.registry import PRIMITIVES
from bnas_pyro.registry import Registry, UnknownNameError
from bnas_pyro.spaces import SPACES, build_space


def test_register_get_list_and_refuse():
    r = Registry("widget")
    r.register("b", 2)
    r.register("a", 1)
    assert r.get("a") == 1 and r.names() == ["a", "b"] and list(r) == ["b", "a"] and "a" in r
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        r.register("a", 3)
    r.register("a", 3, overwrite=True)
    assert r.get("a") == 3
    with pytest.raises(ValueError, match="non-empty string"):
        r.register("", 0)
    with pytest.raises(UnknownNameError) as err:
        r.get("bb")
    assert str(err.value) == "unknown widget 'bb' (did you mean 'b'?); available: a, b"
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    assert r.unregister("b") == 2 and r.names() == ["a"]


@pytest.mark.parametrize("lookup, kind", [
    (lambda: build_primitive("lineer", 2, 2), "primitive 'lineer' (did you mean 'linear'?)"),
    (lambda: build_space("mlp_cel", None), "search space 'mlp_cel' (did you mean 'mlp_cell'?)"),
    (lambda: DATASETS.get("wines"), "data set 'wines' (did you mean 'wine'?)"),
    (lambda: guides.guide_class("meanfield"), "guide 'meanfield' (did you mean 'mean_field'?)"),
    (lambda: get_mode("evidense"), "mode 'evidense' (did you mean 'evidence'?)"),
    (lambda: get_strategy("hoagg"), "hypergradient 'hoagg' (did you mean 'hoag'?)"),
])
def test_every_registry_names_the_unknown_entry_and_the_choices(lookup, kind):
    with pytest.raises(UnknownNameError) as err:
        lookup()
    assert str(err.value).startswith(f"unknown {kind}; available: ")


def test_the_built_in_entries_are_registered_on_import():
    assert {"linear", "tanh", "relu", "legendre", "conv_3x3", "none", "tanh_subset"} <= set(PRIMITIVES)
    # (other tests of the session may have registered more: the built-in ones come first)
    assert list(SPACES)[:2] == ["mlp_cell", "conv_cell"]
    assert list(MODES)[:7] == ["evidence", "grow", "prune", "enumerate", "ml", "map", "holdout"]
    assert list(STRATEGIES)[:6] == ["joint", "greedy", "drmad", "hoag", "unrolled", "random"]
    assert list(guides.GUIDES)[:4] == ["mean_field", "full_rank", "delta", "multistart"]
    assert {"digits", "wine", "diabetes", "polynomial"} <= set(DATASETS)
