"""mgjax: the coupled magnesium / type 2 diabetes physiology as a differentiable JAX model.

Importing mgjax does two things besides defining names:

- it enables float64 in JAX (`jax.config.update("jax_enable_x64", True)`). The model is stiff
  and multi-scale (minutes to months, stiffness ~5e5) and float32 breaks its solves; code
  embedding mgjax should keep float64 on;
- if JAX's backend has not started yet, it adds `--xla_cpu_use_fusion_emitters=false` to
  `XLA_FLAGS` (XLA:CPU's classic loop emitters instead of its MLIR fusion emitters), unless
  `XLA_FLAGS` already sets that flag or `MGJAX_XLA_FLAGS=0`. On this model's programs the
  fusion emitters compile slowly and run no faster: a reverse-mode gradient of a 3-hour solve
  compiles in 16 s instead of 24 s (16 weeks: 16 instead of 27 s) and runs 11–15 % faster
  (docs/embedding.md). It applies to every XLA:CPU program of the process.

Nothing else happens at import: no backend is started, no file is read, no distributed job is
joined (`mgjax fit --distributed` joins one from the command line).
"""

import os as _os

import jax as _jax

_jax.config.update("jax_enable_x64", True)


def _xla_cpu_flags() -> None:
    """XLA:CPU's fusion emitters off for this process (see the module docstring)."""
    flags = _os.environ.get("XLA_FLAGS", "")
    if _os.environ.get("MGJAX_XLA_FLAGS", "1") == "0" or "xla_cpu_use_fusion_emitters" in flags:
        return
    try:  # JAX's private module: on a JAX without it, leave the flags alone
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:
        return
    if backends_are_initialized():  # too late: XLA has read its flags
        return
    _os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_use_fusion_emitters=false".strip()


_xla_cpu_flags()

from . import fit as fit  # noqa: E402
from . import studies as studies  # noqa: E402
from .data import Dataset as Dataset  # noqa: E402
from .data import DatasetError as DatasetError  # noqa: E402
from .data import UnitError as UnitError  # noqa: E402
from .data import from_model_units as from_model_units  # noqa: E402
from .data import known_units as known_units  # noqa: E402
from .data import load_dataset as load_dataset  # noqa: E402
from .data import to_model_units as to_model_units  # noqa: E402
from .model import OBSERVABLE_UNITS as OBSERVABLE_UNITS  # noqa: E402
from .model import PRESET_CHANGES as PRESET_CHANGES  # noqa: E402
from .model import THERAPY_CHANGES as THERAPY_CHANGES  # noqa: E402
from .model import Inputs as Inputs  # noqa: E402
from .model import MgT2DModel as MgT2DModel  # noqa: E402
from .model import ParameterRangeWarning as ParameterRangeWarning  # noqa: E402
from .model import get_parameter as get_parameter  # noqa: E402
from .model import get_parameters as get_parameters  # noqa: E402
from .model import mechanisms as mechanisms  # noqa: E402
from .model import parameter_infos as parameter_infos  # noqa: E402
from .model import parameter_names as parameter_names  # noqa: E402
from .model import parameter_table as parameter_table  # noqa: E402
from .model import preset as preset  # noqa: E402
from .model import preset_names as preset_names  # noqa: E402
from .model import replace_mechanism as replace_mechanism  # noqa: E402
from .model import set_parameters as set_parameters  # noqa: E402
from .model import therapies_of as therapies_of  # noqa: E402
from .model import therapy_names as therapy_names  # noqa: E402
from .model import with_therapy as with_therapy  # noqa: E402
from .protocols import IVGTT as IVGTT  # noqa: E402
from .protocols import OGTT as OGTT  # noqa: E402
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
from .solve import GlucoseSeries as GlucoseSeries  # noqa: E402
from .solve import Rodas4 as Rodas4  # noqa: E402
from .solve import SecretionDoseResponse as SecretionDoseResponse  # noqa: E402
from .solve import SecretionTrajectory as SecretionTrajectory  # noqa: E402
from .solve import Series as Series  # noqa: E402
from .solve import SolverOptions as SolverOptions  # noqa: E402
from .solve import State as State  # noqa: E402
from .solve import Trajectory as Trajectory  # noqa: E402
from .solve import observable_names as observable_names  # noqa: E402
from .solve import observables as observables  # noqa: E402
from .solve import secretion_dose_response as secretion_dose_response  # noqa: E402
from .solve import simulate as simulate  # noqa: E402
from .solve import simulate_secretion as simulate_secretion  # noqa: E402
from .solve import solve as solve  # noqa: E402
from .solve import steady_state as steady_state  # noqa: E402
from .solve import steady_state_residual as steady_state_residual  # noqa: E402
from .solve import vector_field as vector_field  # noqa: E402

__version__ = "0.1.0"
