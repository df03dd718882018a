"""Synthetic data: noisy observations of a protocol (recovery studies) and virtual cohorts
(log-normal populations per group preset, the default study design; `mgjax synth`)."""

from ._cohort import COHORT_ERROR_MODELS as COHORT_ERROR_MODELS
from ._cohort import COHORT_PARAMETERS as COHORT_PARAMETERS
from ._cohort import GROUPS as GROUPS
from ._cohort import Cohort as Cohort
from ._cohort import Population as Population
from ._cohort import cohort_error_models as cohort_error_models
from ._cohort import study_design as study_design
from ._cohort import synthesize as synthesize
from ._observations import observe_protocol as observe_protocol
from ._observations import perturb as perturb
