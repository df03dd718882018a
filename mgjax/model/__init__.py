"""The physiological submodels and the coupled model."""

from ._base import AbstractSubmodel as AbstractSubmodel
from ._beta_cell import BetaCell as BetaCell
from ._coupled import ACCUMULATOR_STATES as ACCUMULATOR_STATES
from ._coupled import OBSERVABLE_UNITS as OBSERVABLE_UNITS
from ._coupled import MgT2DModel as MgT2DModel
from ._glucose_insulin import GlucoseInsulin as GlucoseInsulin
from ._glycation import Glycation as Glycation
from ._inputs import Inputs as Inputs
from ._insulin_signalling import InsulinSignalling as InsulinSignalling
from ._intestinal_magnesium import IntestinalMagnesium as IntestinalMagnesium
from ._magnesium_pools import MagnesiumPools as MagnesiumPools
from ._mechanisms import mechanisms as mechanisms
from ._mechanisms import replace_mechanism as replace_mechanism
from ._parameter import ParameterInfo as ParameterInfo
from ._parameter import parameter as parameter
from ._parameters import get_parameter as get_parameter
from ._parameters import get_parameters as get_parameters
from ._parameters import parameter_infos as parameter_infos
from ._parameters import parameter_names as parameter_names
from ._parameters import parameter_table as parameter_table
from ._parameters import set_parameters as set_parameters
from ._presets import PRESET_CHANGES as PRESET_CHANGES
from ._presets import preset as preset
from ._presets import preset_names as preset_names
from ._renal_magnesium import RenalMagnesium as RenalMagnesium
