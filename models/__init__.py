"""Pyro model definitions: priors on weights and structure, likelihoods, the joint supernet model."""

from .likelihoods import CategoricalLikelihood, Likelihood, NormalLikelihood
from .structure_priors import (ConcreteGroups, ConcreteStructurePrior, concrete, concrete_log_density,
                               structure_site)
from .supernet_model import BayesianSupernet
from .weight_priors import WEIGHT_SITE, GaussianWeightPrior, log_gamma_per_parameter

__all__ = [
    "BayesianSupernet", "CategoricalLikelihood", "ConcreteGroups", "ConcreteStructurePrior", "GaussianWeightPrior",
    "Likelihood", "NormalLikelihood", "WEIGHT_SITE", "concrete", "concrete_log_density",
    "log_gamma_per_parameter", "structure_site",
]
