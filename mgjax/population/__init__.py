"""Population inference (nonlinear mixed effects): one population model over a cohort of
per-subject fit problems, estimated by FOCE-I (`fit_population`).

Imports: batch (the coupled model's cohorts as stacked problems), fit (the problems'
interface), data, solve and below. Imported by: app."""

from ._cohort import cohort_problems
from ._fit import PopulationResult, fit_population, stack_problems
from ._laplace import empirical_bayes, subject_objective
from ._model import CovariateEffect, PopulationModel
from ._one_compartment import (
    QUANTITIES as ONE_COMPARTMENT_QUANTITIES,
)
from ._one_compartment import (
    OneCompartmentOral,
    concentration,
    nonmem_table,
    one_compartment_problem,
    one_compartment_problems,
    simulate_one_compartment_cohort,
)

__all__ = [
    "ONE_COMPARTMENT_QUANTITIES",
    "CovariateEffect",
    "OneCompartmentOral",
    "PopulationModel",
    "PopulationResult",
    "cohort_problems",
    "concentration",
    "empirical_bayes",
    "fit_population",
    "nonmem_table",
    "one_compartment_problem",
    "one_compartment_problems",
    "simulate_one_compartment_cohort",
    "stack_problems",
    "subject_objective",
]
