"""Published studies as simulations: the joint recalibration of the presets on every shipped
published number and the leave-one-study-out prediction of each trial's treatment effect."""

from ._calibration import CALIBRATED_PARAMETERS as CALIBRATED_PARAMETERS
from ._calibration import PRESET_CALIBRATED_PARAMETERS as PRESET_CALIBRATED_PARAMETERS
from ._calibration import Calibration as Calibration
from ._calibration import StudyCalibration as StudyCalibration
from ._calibration import is_outcome as is_outcome
from ._calibration import readouts as readouts
from ._catalogue import EFFECTS as EFFECTS
from ._catalogue import NOT_SIMULATED as NOT_SIMULATED
from ._catalogue import TRIALS as TRIALS
from ._catalogue import Effect as Effect
from ._catalogue import Target as Target
from ._catalogue import TrialDesign as TrialDesign
from ._catalogue import effects as effects
from ._catalogue import targets as targets
