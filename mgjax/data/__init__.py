"""Data at the boundary: the dataset format (observations, doses, subjects CSVs), dose records
→ protocols, clinical units → model units, and the bundled published reference numbers."""

from ._dataset import Dataset as Dataset
from ._dataset import DatasetError as DatasetError
from ._dataset import load_dataset as load_dataset
from ._nonmem import NonmemData as NonmemData
from ._nonmem import convert_nonmem as convert_nonmem
from ._nonmem import read_nonmem as read_nonmem
from ._published import published as published
from ._published import published_targets as published_targets
from ._records import protocol_from_records as protocol_from_records
from ._units import UnitError as UnitError
from ._units import from_model_units as from_model_units
from ._units import known_units as known_units
from ._units import to_model_units as to_model_units
