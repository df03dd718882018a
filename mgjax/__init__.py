"""mgjax: the coupled magnesium / type 2 diabetes physiology as a differentiable JAX model.

Importing mgjax enables float64 in JAX (`jax_enable_x64`): the model is stiff and multi-scale
(minutes to months) and float32 breaks its solves.
"""

import os as _os

import jax as _jax

_jax.config.update("jax_enable_x64", True)
if _os.environ.get("MGJAX_DISTRIBUTED") == "1":  # before any array exists (see _distributed)
    from ._distributed import initialize_from_environment as _initialize_distributed

    _initialize_distributed()

from ._mechanisms import mechanisms as mechanisms  # noqa: E402
from ._mechanisms import replace_mechanism as replace_mechanism  # noqa: E402
from ._parameters import get_parameter as get_parameter  # noqa: E402
from ._parameters import get_parameters as get_parameters  # noqa: E402
from ._parameters import parameter_infos as parameter_infos  # noqa: E402
from ._parameters import parameter_names as parameter_names  # noqa: E402
from ._parameters import parameter_table as parameter_table  # noqa: E402
from ._parameters import set_parameters as set_parameters  # noqa: E402
from ._presets import PRESET_CHANGES as PRESET_CHANGES  # noqa: E402
from ._presets import preset as preset  # noqa: E402
from ._presets import preset_names as preset_names  # noqa: E402
from ._rosenbrock import Rodas4 as Rodas4  # noqa: E402
from ._simulate import Trajectory as Trajectory  # noqa: E402
from ._simulate import observable_names as observable_names  # noqa: E402
from ._simulate import observables as observables  # noqa: E402
from ._simulate import simulate as simulate  # noqa: E402
from ._solve import SolverOptions as SolverOptions  # noqa: E402
from ._solve import solve as solve  # noqa: E402
from ._steady_state import State as State  # noqa: E402
from ._steady_state import steady_state as steady_state  # noqa: E402
from ._steady_state import steady_state_residual as steady_state_residual  # noqa: E402
from ._vector_field import vector_field as vector_field  # noqa: E402
from .model import OBSERVABLE_UNITS as OBSERVABLE_UNITS  # noqa: E402
from .model import Inputs as Inputs  # noqa: E402
from .model import MgT2DModel as MgT2DModel  # noqa: E402
from .protocols import IVGTT as IVGTT  # noqa: E402
from .protocols import SALT_BIOAVAILABILITY as SALT_BIOAVAILABILITY  # noqa: E402
from .protocols import AbstractProtocol as AbstractProtocol  # noqa: E402
from .protocols import ConstantInputs as ConstantInputs  # noqa: E402
from .protocols import GlucoseController as GlucoseController  # noqa: E402
from .protocols import HyperglycemicClamp as HyperglycemicClamp  # noqa: E402
from .protocols import HyperinsulinemicClamp as HyperinsulinemicClamp  # noqa: E402
from .protocols import OralMagnesiumTrial as OralMagnesiumTrial  # noqa: E402
from .protocols import PiecewiseConstant as PiecewiseConstant  # noqa: E402
from .protocols import body_surface_area as body_surface_area  # noqa: E402
from .protocols import fasting as fasting  # noqa: E402

__version__ = "0.1.0"
from . import fit as fit  # noqa: E402
from ._dataset import Dataset as Dataset  # noqa: E402
from ._dataset import DatasetError as DatasetError  # noqa: E402
from ._dataset import load_dataset as load_dataset  # noqa: E402
from ._secretion import GlucoseSeries as GlucoseSeries  # noqa: E402
from ._secretion import SecretionTrajectory as SecretionTrajectory  # noqa: E402
from ._secretion import Series as Series  # noqa: E402
from ._secretion import simulate_secretion as simulate_secretion  # noqa: E402
from ._units import UnitError as UnitError  # noqa: E402
from ._units import from_model_units as from_model_units  # noqa: E402
from ._units import known_units as known_units  # noqa: E402
from ._units import to_model_units as to_model_units  # noqa: E402
