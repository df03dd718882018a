"""Fitting: experiments, objective, optimisers, multistart, uncertainty and results."""

from ._experiment import Experiment as Experiment
from ._experiment import experiments_for_subject as experiments_for_subject
from ._experiment import make_experiment as make_experiment
from ._experiment import subject_covariates as subject_covariates
from ._objective import ErrorModel as ErrorModel
from ._objective import FitProblem as FitProblem
from ._objective import additive as additive
from ._objective import combined as combined
from ._objective import make_problem as make_problem
from ._objective import proportional as proportional
from ._optimise import METHODS as METHODS
from ._optimise import OptimisationResult as OptimisationResult
from ._optimise import optimise as optimise
