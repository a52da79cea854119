"""bnas-pyro: the most plausible structure of a neural network, the Bayesian way, in Pyro.

The package reads in the order the data flows (the method, with every formula: ``docs/METHOD.md``):

- :mod:`bnas_pyro.primitives`, :mod:`~bnas_pyro.search_space`, :mod:`~bnas_pyro.spaces`: what can
  be chosen (section 1);
- :mod:`~bnas_pyro.supernet`, :mod:`~bnas_pyro.hyperparameters`, :mod:`~bnas_pyro.distributions`,
  :mod:`bnas_pyro.models`: the prior, a Pyro model (section 2);
- :mod:`bnas_pyro.guides`, :mod:`~bnas_pyro.objectives`, :mod:`~bnas_pyro.inference`: q and the
  scaled ELBO, the inner loop (section 3);
- :mod:`~bnas_pyro.coefficients`, :mod:`~bnas_pyro.modes`, :mod:`~bnas_pyro.structure_targets`:
  the generalised bilevel problem (section 4);
- :mod:`bnas_pyro.hypergradients`: how h moves (section 5);
- :mod:`bnas_pyro.search`: the outer loop, restarts, enumeration, checkpoints;
- :mod:`bnas_pyro.analysis`: the structure posterior, the result, complexity, ArviZ, export;
- :mod:`bnas_pyro.app`: configuration, the run directory and the ``bnas-pyro`` command.
"""

from bnas_pyro.analysis.comparison import compare
from bnas_pyro.analysis.export import DerivedNetwork, load_network
from bnas_pyro.analysis.result import OuterRecord, SearchResult
from bnas_pyro.coefficients import Coefficients
from bnas_pyro.data import SplitData, available_datasets, load_dataset
from bnas_pyro.hyperparameters import HyperParameters
from bnas_pyro.inference import InnerLoop, MinibatchSampler, fit
from bnas_pyro.modes import get_mode
from bnas_pyro.objectives import ElboTerms, ScaledELBO, estimate_elbo, outer_objective, trace_terms
from bnas_pyro.primitives import (Primitive, available_primitives, build_primitive,
                                  register_primitive)
from bnas_pyro.search.bilevel import BilevelSearch
from bnas_pyro.search.enumeration import run_enumeration
from bnas_pyro.search.restarts import RestartReport, run_restarts
from bnas_pyro.search_space import Edge, PrimitiveSpec, SearchSpace, SearchSpaceError
from bnas_pyro.spaces import available_spaces, build_space, conv_cell_space, mlp_cell_space
from bnas_pyro.structure_targets import StructureDistribution, StructureMixture
from bnas_pyro.supernet import ParameterLayout, Supernet

__version__ = "0.1.0"

__all__ = [
    "BilevelSearch", "Coefficients", "DerivedNetwork", "Edge", "ElboTerms", "HyperParameters",
    "InnerLoop", "MinibatchSampler", "OuterRecord", "ParameterLayout", "Primitive",
    "PrimitiveSpec", "RestartReport", "ScaledELBO", "SearchResult", "SearchSpace",
    "SearchSpaceError", "SplitData", "StructureDistribution", "StructureMixture", "Supernet",
    "available_datasets", "available_primitives", "available_spaces", "build_primitive",
    "build_space", "compare", "conv_cell_space", "estimate_elbo", "fit", "get_mode",
    "load_dataset", "load_network", "mlp_cell_space", "outer_objective", "register_primitive",
    "run_enumeration", "run_restarts", "trace_terms",
]
