"""Population inference (nonlinear mixed effects): one population model over a cohort of
per-subject fit problems, estimated by FOCE-I (`fit_population`).

Imports: fit (the problems' interface, optimiser constants), solve (solver options). Imported
by: app."""

from ._fit import PopulationResult, fit_population, stack_problems
from ._laplace import empirical_bayes, subject_objective
from ._model import CovariateEffect, PopulationModel
from ._one_compartment import (
    QUANTITIES as ONE_COMPARTMENT_QUANTITIES,
)
from ._one_compartment import (
    OneCompartmentOral,
    concentration,
    one_compartment_problem,
    simulate_one_compartment_cohort,
)

__all__ = [
    "ONE_COMPARTMENT_QUANTITIES",
    "CovariateEffect",
    "OneCompartmentOral",
    "PopulationModel",
    "PopulationResult",
    "concentration",
    "empirical_bayes",
    "fit_population",
    "one_compartment_problem",
    "simulate_one_compartment_cohort",
    "stack_problems",
    "subject_objective",
]
