"""Batch fitting: whole cohorts through one compiled program, in chunks of lanes (one per call
on CPU, vmapped on accelerators), sharded over devices, resumable, split over scheduler jobs
or `jax.distributed` processes."""

from ._build import SubjectBatch as SubjectBatch
from ._build import build_batches as build_batches
from ._build import default_base_model as default_base_model
from ._build import padded_size as padded_size
from ._fit_batch import fit_batch as fit_batch
from ._fit_batch import fit_each as fit_each
from ._lanes import BatchResult as BatchResult
from ._run import BatchSettings as BatchSettings
from ._run import lanes_per_call as lanes_per_call
from ._run import run_batch as run_batch
from ._store import RunDirectoryError as RunDirectoryError
from ._store import merge as merge
from ._store import parse_shard as parse_shard
from ._store import read_parts as read_parts
from ._store import shard_subjects as shard_subjects
