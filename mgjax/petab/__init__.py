"""PEtab v1 import (fit any problem of the PEtab benchmark collection with the mgjax engine) and
export (the coupled model as SBML, one subject's experiment as a PEtab problem).

Needs the `petab` extra (`pip install "mgjax[petab]"`: petab, python-libsbml, sbmlmath, sympy,
fides).
"""

from ._explore import Exploration as Exploration
from ._explore import explore_flat_directions as explore_flat_directions
from ._export import ExportError as ExportError
from ._export import SymbolicSystem as SymbolicSystem
from ._export import problem_to_petab as problem_to_petab
from ._export import symbolic_system as symbolic_system
from ._export import to_petab as to_petab
from ._export import to_sbml as to_sbml
from ._fides import LocalFit as LocalFit
from ._fides import fit_start as fit_start
from ._import import PetabError as PetabError
from ._import import import_problem as import_problem
from ._problem import PetabModel as PetabModel
from ._problem import PetabProblem as PetabProblem
from ._sbml import UnsupportedSBMLError as UnsupportedSBMLError
from ._sbml import read_sbml as read_sbml
