"""Solving the model: the Rodas4 solver, the one `diffeqsolve` call, the fasting steady state,
simulations with named observables, the beta-cell forced by a glucose series, and the SciPy
reference solve used for cross-checks and benchmarks (`scipy_solve`: needs SciPy)."""

from ._reference import jax_jacobian as jax_jacobian
from ._reference import numpy_vector_field as numpy_vector_field
from ._reference import scipy_solve as scipy_solve
from ._rosenbrock import Rodas4 as Rodas4
from ._secretion import GlucoseSeries as GlucoseSeries
from ._secretion import SecretionDoseResponse as SecretionDoseResponse
from ._secretion import SecretionTrajectory as SecretionTrajectory
from ._secretion import Series as Series
from ._secretion import secretion_dose_response as secretion_dose_response
from ._secretion import simulate_secretion as simulate_secretion
from ._simulate import Trajectory as Trajectory
from ._simulate import observable_names as observable_names
from ._simulate import observables as observables
from ._simulate import observed_values as observed_values
from ._simulate import simulate as simulate
from ._solve import SolverOptions as SolverOptions
from ._solve import for_jacobians as for_jacobians
from ._solve import integrate as integrate
from ._solve import reverse_mode_adjoint as reverse_mode_adjoint
from ._solve import rodas4_for as rodas4_for
from ._solve import solve as solve
from ._steady_state import State as State
from ._steady_state import steady_state as steady_state
from ._steady_state import steady_state_residual as steady_state_residual
from ._vector_field import absolute_tolerances as absolute_tolerances
from ._vector_field import quadrature_mask as quadrature_mask
from ._vector_field import vector_field as vector_field
