"""Fitting: experiments, objective, optimisers, multistart, uncertainty and results."""

from ._experiment import Experiment as Experiment
from ._experiment import experiments_for_subject as experiments_for_subject
from ._experiment import make_experiment as make_experiment
from ._experiment import subject_covariates as subject_covariates
from ._fit import fit as fit
from ._multistart import latin_hypercube as latin_hypercube
from ._multistart import multistart as multistart
from ._multistart import starting_points as starting_points
from ._objective import ErrorModel as ErrorModel
from ._objective import FitProblem as FitProblem
from ._objective import additive as additive
from ._objective import combined as combined
from ._objective import make_problem as make_problem
from ._objective import proportional as proportional
from ._objective import range_priors as range_priors
from ._optimise import DEFAULT_METHOD as DEFAULT_METHOD
from ._optimise import METHODS as METHODS
from ._optimise import OptimisationResult as OptimisationResult
from ._optimise import optimise as optimise
from ._result import FitResult as FitResult
from ._uncertainty import fisher_information as fisher_information
from ._uncertainty import fix_parameter as fix_parameter
from ._uncertainty import laplace as laplace
from ._uncertainty import profile_likelihood as profile_likelihood
