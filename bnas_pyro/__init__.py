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

# issue 5: data sets, search spaces (registers the conv primitives), ArviZ analysis
from . import conv_primitives as _conv_primitives  # noqa: E402,F401  (registers conv_3x3, ...)
from .data import SplitData, available_datasets, load_dataset  # noqa: E402
from .posterior import compare  # noqa: E402
from .spaces import available_spaces, build_space, conv_cell_space, mlp_cell_space  # noqa: E402

__all__ += ["SplitData", "available_datasets", "available_spaces", "build_space", "compare",
            "conv_cell_space", "load_dataset", "mlp_cell_space"]

# issue 4: modes, restarts, the derived network (registers tanh_subset, linear_subset)
from . import extra_primitives as _extra_primitives  # noqa: E402,F401
from .export import DerivedNetwork, load_network  # noqa: E402
from .restarts import RestartReport, run_restarts  # noqa: E402
from .schedules import get_mode  # noqa: E402

__all__ += ["DerivedNetwork", "RestartReport", "get_mode", "load_network", "run_restarts"]
