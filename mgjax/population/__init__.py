"""Population inference (nonlinear mixed effects): one population model over a cohort of
per-subject fit problems, estimated by FOCE-I or SAEM (`fit_population`); visual predictive checks
(`visual_predictive_check`); a fully Bayesian fit by NUTS
(`sample_population`).

Imports: batch (the coupled model's cohorts as stacked problems), fit (the problems'
interface), data, solve and below. Imported by: app."""

from ._bayes import PopulationPosterior, sample_population
from ._cohort import cohort_problems
from ._fit import PopulationResult, fit_population, stack_problems
from ._laplace import empirical_bayes, expected_information, subject_objective
from ._minimal_model import (
    QUANTITIES as MINIMAL_MODEL_QUANTITIES,
)
from ._minimal_model import (
    MinimalModelIVGTT,
    ivgtt_glucose,
    minimal_model_options,
    minimal_model_problem,
    minimal_model_problems,
    simulate_minimal_model_cohort,
)
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
from ._saem import SaemSettings, importance_sampling_ofv, saem, stochastic_information
from ._vpc import VisualPredictiveCheck, simulate_replicates, visual_predictive_check

__all__ = [
    "MINIMAL_MODEL_QUANTITIES",
    "MinimalModelIVGTT",
    "ONE_COMPARTMENT_QUANTITIES",
    "CovariateEffect",
    "OneCompartmentOral",
    "PopulationModel",
    "PopulationPosterior",
    "PopulationResult",
    "SaemSettings",
    "VisualPredictiveCheck",
    "cohort_problems",
    "concentration",
    "empirical_bayes",
    "expected_information",
    "fit_population",
    "importance_sampling_ofv",
    "ivgtt_glucose",
    "minimal_model_options",
    "minimal_model_problem",
    "minimal_model_problems",
    "nonmem_table",
    "one_compartment_problem",
    "one_compartment_problems",
    "saem",
    "sample_population",
    "simulate_minimal_model_cohort",
    "simulate_one_compartment_cohort",
    "simulate_replicates",
    "stack_problems",
    "stochastic_information",
    "subject_objective",
    "visual_predictive_check",
]
