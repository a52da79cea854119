"""Bad input gets a clear error naming the culprit."""

import json

import pytest
import torch
from torch import nn

from bnas_pyro import Coefficients, SearchSpace, SearchSpaceError, register_primitive
from bnas_pyro.guides import MeanFieldGuide
from bnas_pyro.models import BayesianSupernet, NormalLikelihood
from bnas_pyro.primitives import available_primitives


def test_cycle_names_the_edge():
    with pytest.raises(SearchSpaceError, match=r"cycle through edge (a->b|b->c|c->a)"):
        SearchSpace({"x": 2, "a": 2, "b": 2, "c": 2, "y": 1},
                    [("x", "a", ["linear"]), ("a", "b", ["linear"]), ("b", "c", ["linear"]),
                     ("c", "a", ["linear"]), ("c", "y", ["linear"])])


def test_self_loop_is_a_cycle():
    with pytest.raises(SearchSpaceError, match="a->a"):
        SearchSpace({"x": 2, "a": 2, "y": 1}, [("x", "a", ["linear"]), ("a", "a", ["linear"]),
                                               ("a", "y", ["linear"])])


def test_unreachable_node_is_named():
    with pytest.raises(SearchSpaceError, match="node 'orphan' is not reachable from the input"):
        SearchSpace({"x": 2, "orphan": 2, "y": 1},
                    [("x", "y", ["linear"]), ("orphan", "y", ["linear"])])


def test_dead_end_node_is_named():
    with pytest.raises(SearchSpaceError, match="node 'dead' does not reach the output"):
        SearchSpace({"x": 2, "dead": 2, "y": 1},
                    [("x", "y", ["linear"]), ("x", "dead", ["linear"])])


def test_empty_primitive_list_names_the_edge():
    with pytest.raises(SearchSpaceError, match="edge x->y has an empty primitive list"):
        SearchSpace({"x": 2, "y": 1}, [("x", "y", [])])


def test_identity_on_mismatched_sizes_names_edge_and_primitive():
    with pytest.raises(SearchSpaceError, match=r"edge x->y, primitive 'identity'.*in_features=3"):
        SearchSpace({"x": 3, "y": 2}, [("x", "y", ["linear", "identity"])])


def test_unknown_primitive_names_edge_and_primitive():
    with pytest.raises(SearchSpaceError, match=r"edge x->y: unknown primitive 'sigmoidd'"):
        SearchSpace({"x": 3, "y": 2}, [("x", "y", ["linear", "sigmoidd"])])


def test_undeclared_node_is_named():
    with pytest.raises(SearchSpaceError, match="edge x->z: node 'z' is not declared"):
        SearchSpace({"x": 3, "y": 2}, [("x", "z", ["linear"])])


def test_json_round_trip_and_dict_form():
    space = SearchSpace({"x": 3, "h": 4, "y": 2},
                        [("x", "h", ["linear", {"name": "poly", "degree": 3}]),
                         ("h", "y", ["tanh", "zero"]), ("x", "y", ["constant"])])
    again = SearchSpace.from_json(space.to_json())
    assert again.to_dict() == space.to_dict()
    assert json.loads(space.to_json())["edges"][0]["primitives"][1] == {"name": "poly", "degree": 3}
    assert space.num_structures == 2 * 2 * 1
    assert space.edges[0].labels == ["linear", "poly(degree=3)"]


def test_registered_module_primitive_is_usable():
    name = "sigmoid_layer_test"
    if name not in available_primitives():
        register_primitive(name, lambda i, o: nn.Sequential(nn.Linear(i, o), nn.Sigmoid()))
    space = SearchSpace({"x": 3, "y": 2}, [("x", "y", ["linear", name])])
    model = BayesianSupernet(space)
    assert model.layout.num_parameters == 2 * (3 * 2 + 2)
    out = model.supernet(torch.randn(5, 3), torch.randn(16), [torch.tensor([0.0, 1.0])])
    assert out.shape == (5, 2) and (out > 0).all() and (out < 1).all()


def regression_model():
    space = SearchSpace({"x": 3, "y": 1}, [("x", "y", ["linear", "tanh"])])
    return BayesianSupernet(space, likelihood=NormalLikelihood())


def test_nan_in_data_names_row_and_column():
    x = torch.randn(10, 3)
    x[4, 2] = float("nan")
    with pytest.raises(ValueError, match="row 4, column 2"):
        regression_model().check_data(x, torch.randn(10))


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match=r"input node 'x' expects \(batch, 3\)"):
        regression_model().check_data(torch.randn(10, 4), torch.randn(10))
    with pytest.raises(ValueError, match="x has 10 rows but y has 9"):
        regression_model().check_data(torch.randn(10, 3), torch.randn(9))


def test_label_out_of_range_is_named():
    space = SearchSpace({"x": 3, "y": 4}, [("x", "y", ["linear"])])
    with pytest.raises(ValueError, match=r"label y\[2\] = 7 is out of range \[0, 4\)"):
        BayesianSupernet(space).check_data(torch.randn(3, 3), torch.tensor([0, 1, 7]))


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan")])
def test_non_positive_temperature_is_refused(t):
    with pytest.raises(ValueError, match="temperature"):
        regression_model().temperature = t
    with pytest.raises(ValueError, match="c_temp"):
        Coefficients(c_temp=t)


def test_coefficients_validate_themselves():
    with pytest.raises(ValueError, match="c_reg"):
        Coefficients(c_reg=-1)
    with pytest.raises(ValueError, match="c_train must be finite"):
        Coefficients(c_train=float("inf"))
    with pytest.raises(TypeError, match="c_comb"):
        Coefficients(c_comb="1")
    assert Coefficients().is_evidence and not Coefficients(c_comb=-1).is_evidence


def test_guide_temperature_is_checked():
    with pytest.raises(ValueError, match="temperature"):
        MeanFieldGuide(regression_model(), temperature=0.0)


def test_search_with_nothing_to_learn_says_so():
    """learn=[] (or every hyperparameter frozen) is refused by name, not by torch's optimiser."""
    from bnas_pyro import BilevelSearch

    space = SearchSpace({"x": 1, "y": 1}, [("x", "y", ["linear", "constant"])])
    model = BayesianSupernet(space, likelihood=NormalLikelihood(precision=1.0))
    with pytest.raises(ValueError, match=r"learn=\[\] leaves no hyperparameter to move.*log_precision"):
        BilevelSearch(model, MeanFieldGuide(model), Coefficients(), "joint", learn=[])
    with pytest.raises(ValueError, match="unknown hyperparameters in learn"):
        BilevelSearch(model, MeanFieldGuide(model), Coefficients(), "joint", learn=["A"])
