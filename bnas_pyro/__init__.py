"""bnas-pyro: the most plausible structure of a neural network, the Bayesian way, in Pyro.

See ``../shared/METHOD.md`` (in the repository, ``docs/``) for the method.
"""

from .coefficients import Coefficients
from .hyperparameters import HyperParameters
from .inference import InnerLoop, MinibatchSampler, fit
from .objectives import ElboTerms, ScaledELBO, estimate_elbo, outer_objective, trace_terms
from .primitives import Primitive, available_primitives, build_primitive, register_primitive
from .search_space import Edge, PrimitiveSpec, SearchSpace, SearchSpaceError
from .supernet import ParameterLayout, Supernet

__version__ = "0.1.0"

__all__ = [
    "Coefficients", "Edge", "ElboTerms", "HyperParameters", "InnerLoop", "MinibatchSampler",
    "ParameterLayout", "Primitive", "PrimitiveSpec", "ScaledELBO", "SearchSpace",
    "SearchSpaceError", "Supernet", "available_primitives", "build_primitive", "estimate_elbo",
    "fit", "outer_objective", "register_primitive", "trace_terms",
]

from .bilevel import BilevelSearch  # noqa: E402
from .result import OuterRecord, SearchResult  # noqa: E402
from .structure_targets import StructureDistribution  # noqa: E402

__all__ += ["BilevelSearch", "OuterRecord", "SearchResult", "StructureDistribution"]
