"""Protocols: what is given to a subject, and when."""

from ._base import AbstractProtocol as AbstractProtocol
from ._base import PiecewiseConstant as PiecewiseConstant
from ._base import body_surface_area as body_surface_area
from ._base import daily_times as daily_times
from ._base import piecewise_constant as piecewise_constant
from ._clamps import GlucoseController as GlucoseController
from ._clamps import HyperglycemicClamp as HyperglycemicClamp
from ._clamps import HyperinsulinemicClamp as HyperinsulinemicClamp
from ._constant import ConstantInputs as ConstantInputs
from ._constant import Fasting as Fasting
from ._constant import fasting as fasting
from ._ivgtt import IVGTT as IVGTT
from ._ogtt import OGTT as OGTT
from ._trial import MG_PER_MMOL_MAGNESIUM as MG_PER_MMOL_MAGNESIUM
from ._trial import SALT_BIOAVAILABILITY as SALT_BIOAVAILABILITY
from ._trial import OralMagnesiumTrial as OralMagnesiumTrial
