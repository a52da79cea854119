"""The Legendre polynomial primitive (bnas_pyro.primitives.Legendre).

Answers not made up: numpy's Legendre series, the orthonormality of sqrt(2k+1) P_k under U(-1, 1),
and the fact that it spans the same functions as the monomials of the same degree.
"""

import json

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as np_legendre

from bnas_pyro import SearchSpace
from bnas_pyro.primitives import build_primitive


def _numpy_features(x: np.ndarray, degree: int, low: float, high: float) -> np.ndarray:
    u = (2 * x - low - high) / (high - low)
    return np.stack([np.sqrt(2 * k + 1) * np_legendre.legval(u, [0] * k + [1])
                     for k in range(1, degree + 1)], axis=-1)


@pytest.mark.parametrize("low,high", [(-1.0, 1.0), (-2.0, 2.0), (0.0, 5.0)])
def test_features_equal_numpys_legendre_series(low, high):
    prim = build_primitive("legendre", 1, 1, degree=6, low=low, high=high)
    x = torch.linspace(low - 0.5, high + 0.5, 41, dtype=torch.float64)[:, None]
    ours = prim.features(x).numpy()
    assert np.allclose(ours, _numpy_features(x.numpy()[:, 0], 6, low, high), rtol=1e-12, atol=1e-12)


def test_features_are_orthonormal_under_the_uniform_distribution():
    """E[phi_j phi_k] = delta_jk for x ~ U(low, high), by Gauss-Legendre quadrature (exact here)."""
    prim = build_primitive("legendre", 1, 1, degree=5, low=-2.0, high=2.0)
    nodes, weights = np_legendre.leggauss(12)
    x = torch.tensor(2.0 * nodes, dtype=torch.float64)[:, None]
    phi = torch.cat([torch.ones_like(x), prim.features(x)], dim=-1).numpy()
    gram = (phi * weights[:, None] / 2).T @ phi
    assert np.allclose(gram, np.eye(6), atol=1e-12)


def test_same_functions_as_the_monomials():
    """A degree-d Legendre primitive fits any degree-d polynomial exactly (least squares)."""
    x = torch.linspace(-2, 2, 30, dtype=torch.float64)[:, None]
    y = (x**3 - x + 0.3 * x**2 - 1.0)[:, 0]
    prim = build_primitive("legendre", 1, 1, degree=3, low=-2.0, high=2.0)
    phi = torch.cat([torch.ones_like(x), prim.features(x)], dim=-1)
    coef = torch.linalg.lstsq(phi, y[:, None]).solution
    params = {"bias": coef[:1, 0], "weight": coef[1:]}
    assert torch.allclose(prim(x, params)[:, 0], y, atol=1e-10)


def test_vector_input_is_power_major_like_poly():
    """On a vector input, column j * in + i of the features is the order-(j + 1) feature of
    coordinate i (the layout of ``poly``), checked against numpy coordinate by coordinate."""
    prim = build_primitive("legendre", 3, 2, degree=4, low=-1.0, high=3.0)
    assert prim.parameter_shapes == {"bias": (2,), "weight": (12, 2)}
    x = torch.rand(5, 3, dtype=torch.float64) * 4 - 1
    ours = prim.features(x).numpy()
    for i in range(3):
        assert np.allclose(ours[:, i::3], _numpy_features(x.numpy()[:, i], 4, -1.0, 3.0), atol=1e-12)
    params = {"bias": torch.randn(2, dtype=torch.float64),
              "weight": torch.randn(12, 2, dtype=torch.float64)}
    expected = ours @ params["weight"].numpy() + params["bias"].numpy()
    assert np.allclose(prim(x, params).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("name", ["poly", "legendre"])
def test_degree_zero_is_the_constant(name):
    prim = build_primitive(name, 2, 1, degree=0)
    x = torch.randn(4, 2)
    assert prim.parameter_shapes == {"bias": (1,)}
    assert prim.features(x).shape == (4, 0)
    assert torch.equal(prim(x, {"bias": torch.tensor([1.5])}), torch.full((4, 1), 1.5))


@pytest.mark.parametrize("name", ["poly", "legendre"])
@pytest.mark.parametrize("degree", [-1, 2.5, "three", True])
def test_a_bad_degree_is_refused_with_the_primitives_name(name, degree):
    with pytest.raises(ValueError, match=f"{name} degree must be a non-negative integer"):
        build_primitive(name, 1, 1, degree=degree)


@pytest.mark.parametrize("low,high", [(1.0, 1.0), (2.0, -2.0), (float("nan"), 1.0),
                                      (0.0, float("inf")), ("a", 1.0), (None, 1.0)])
def test_a_bad_interval_is_refused_by_name(low, high):
    with pytest.raises(ValueError, match="legendre needs a finite interval"):
        build_primitive("legendre", 1, 1, degree=2, low=low, high=high)


def test_space_json_and_derived_module_round_trip():
    space = SearchSpace({"x": 1, "y": 1},
                        [("x", "y", [{"name": "legendre", "degree": d, "low": -2.0, "high": 2.0}
                                     for d in range(3)])])
    label = space.edges[0].labels[2]
    assert label == "legendre(degree=2,high=2.0,low=-2.0)"
    again = SearchSpace.from_json(space.to_json())
    assert again.edges[0].labels == space.edges[0].labels
    assert json.loads(space.to_json())["edges"][0]["primitives"][2]["low"] == -2.0
    prim = again.primitive_instances[0][2]
    assert prim.low == -2.0 and prim.high == 2.0
