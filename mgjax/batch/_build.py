"""Dataset → batches of fit problems of identical structure, stacked on a leading subject axis.

Subjects' sampling is ragged: each protocol's observations and sampling times are padded to the
cohort's largest (padding masked out of the likelihood), and each protocol lists the same
observables for every subject. Subjects whose problems still differ in structure (another set
of protocols, a clamp of another duration, a trial with another number of doses) form separate
batches, each one compiled program.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import jax
import numpy as np
import pandas as pd

from ..data._dataset import Dataset, DatasetError
from ..fit._experiment import experiments_from_records, record_sizes, split_records
from ..fit._objective import ErrorModel, FitProblem, make_problem
from ..model import MgT2DModel
from ..model._parameters import set_parameters
from ..model._presets import PRESET_CHANGES, preset
from ..solve._solve import SolverOptions


@dataclass
class SubjectBatch:
    """Subjects whose fit problems share one structure: `problems` holds them stacked (NumPy
    arrays with a leading subject axis, in `subjects` order)."""

    subjects: list[str]
    groups: list[str]
    problems: FitProblem

    def __len__(self) -> int:
        return len(self.subjects)

    def take(self, index: np.ndarray) -> FitProblem:
        """The stacked problems of the subjects at `index` (host arrays)."""
        return jax.tree.map(lambda x: x[index], self.problems)

    def one(self, i: int) -> FitProblem:
        """Subject i's own problem (unstacked)."""
        return jax.tree.map(lambda x: x[i], self.problems)


def default_base_model(group: str | None, covariates: Mapping[str, float]) -> MgT2DModel:
    """A subject's starting point: the preset named by its group (healthy reference if the
    group is not a preset name), with its covariates (body weight, height)."""
    name = group if isinstance(group, str) and group in PRESET_CHANGES else "healthy"
    return set_parameters(preset(name), dict(covariates))


def _covariates(row: pd.Series | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if row is not None:
        for column, parameter in [("weight", "body_weight"), ("height", "height")]:
            if column in row.index and not pd.isna(row[column]):
                out[parameter] = float(row[column])
    return out


def subject_base_models(
    dataset: Dataset,
    base_model: Callable[[str | None, Mapping[str, float]], MgT2DModel] = default_base_model,
) -> Callable[[str], tuple[str | None, MgT2DModel]]:
    """subject id → (its group or None, its base model: `base_model(group, covariates)` from
    the subjects table's `group`, `weight` and `height`) — the one lookup batch fits and model
    comparisons share."""
    table = dataset.subjects.set_index("subject") if len(dataset.subjects) else None

    def lookup(subject: str) -> tuple[str | None, MgT2DModel]:
        row = table.loc[subject] if table is not None and subject in table.index else None
        group = None if row is None or "group" not in row.index else row["group"]
        group = None if group is None or pd.isna(group) else str(group)
        return group, base_model(group, _covariates(row))

    return lookup


def padded_size(n: int) -> int:
    """`n` rounded up to the next of 1, 2, 3, 4, 6, 8, 12, 16, 24, … (powers of two and
    1.5 times them): at most a third of padding, few distinct shapes."""
    power = 1
    while True:
        for size in (power, 3 * power // 2):
            if size >= n:
                return size
        power *= 2


def _signature(problem: FitProblem) -> tuple:
    leaves, treedef = jax.tree.flatten(problem)
    return (str(treedef), tuple(np.shape(x) for x in leaves))


def _object_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its string columns as Python objects."""
    strings = [c for c in frame.columns if pd.api.types.is_string_dtype(frame[c])]
    return frame.astype({c: object for c in strings}) if strings else frame


def build_batches(
    dataset: Dataset,
    free: Sequence[str],
    *,
    subjects: Sequence[str] | None = None,
    error_models: Mapping[str, ErrorModel] | None = None,
    priors: Mapping[str, tuple[float, float]] | None = None,
    options: SolverOptions | None = None,
    averaged_trials: bool = True,
    bounded: bool = True,
    base_model: Callable[[str | None, Mapping[str, float]], MgT2DModel] = default_base_model,
) -> list[SubjectBatch]:
    """Fit problems for `subjects` (default all, sorted), grouped into batches of identical
    structure (largest first).

    `base_model(group, covariates)` gives each subject's fixed parameters and starting point
    (default: the preset named by the subjects table's `group`, with weight and height);
    `bounded` as `mgjax.fit.make_problem`'s."""
    # plain Python strings: pandas' Arrow-backed strings make each subject's many small
    # selections slower (1,000 subjects: 8.3 → 7.0 s)
    obs_all = _object_strings(dataset.observations)
    doses_all = _object_strings(dataset.doses)
    if subjects is None:
        subjects = sorted(obs_all["subject"].unique())
    subjects = list(subjects)
    obs_by = {k: v for k, v in obs_all.groupby("subject", sort=False)}
    dose_by = {k: v for k, v in doses_all.groupby("subject", sort=False)}
    empty_doses = doses_all.iloc[0:0]
    subject_model = subject_base_models(dataset, base_model)
    missing = [s for s in subjects if s not in obs_by]
    if missing:
        raise DatasetError(f"subject(s) {missing[:5]} have no observations")
    # one observable list and one padded size per protocol, over the whole dataset (so a
    # shard or a resumed job has the shapes of the full job) and rounded up to a bucket (so
    # cohorts of similar designs share one compiled program)
    names: dict[str, set[str]] = {}
    sizes: dict[str, tuple[int, ...]] = {}
    for (_, protocol), rows in obs_all.groupby(["subject", "protocol"], sort=False):
        fitted, series = split_records(protocol, rows)
        names.setdefault(protocol, set()).update(fitted["observable"])
        old = sizes.get(protocol, (0, 0, 0))
        sizes[protocol] = tuple(map(max, old, record_sizes(fitted, series)))
    observable_names = {p: tuple(sorted(v)) for p, v in names.items()}
    pad_to = {p: tuple(padded_size(k) for k in v) for p, v in sizes.items()}
    by_signature: dict[tuple, tuple[list[str], list[str], list[FitProblem]]] = {}
    for s in subjects:
        group, model = subject_model(s)
        experiments = experiments_from_records(
            obs_by[s],
            dose_by.get(s, empty_doses),
            model,
            averaged_trials=averaged_trials,
            observable_names=observable_names,
            pad_to=pad_to,
        )
        problem = make_problem(
            model,
            experiments,
            free,
            error_models=error_models,
            priors=priors,
            options=options,
            bounded=bounded,
        )
        problem = jax.tree.map(np.asarray, problem)
        entry = by_signature.setdefault(_signature(problem), ([], [], []))
        entry[0].append(s)
        entry[1].append(group or "")
        entry[2].append(problem)
    batches = [
        SubjectBatch(
            subjects=ids,
            groups=groups,
            problems=jax.tree.map(lambda *x: np.stack(x), *problems),
        )
        for ids, groups, problems in by_signature.values()
    ]
    return sorted(batches, key=len, reverse=True)


def merge_batches(
    parts: Sequence[Sequence[SubjectBatch]], subjects: Sequence[str]
) -> list[SubjectBatch]:
    """Batches built from disjoint parts of `subjects` (`build_batches` on each part) merged
    into those `build_batches` builds of all of them: one batch per structure, in order of
    first appearance, subjects in `subjects` order, largest first. Worker processes build
    their shares of a cohort this way (`mgjax.batch._workers.SharedBuild`)."""
    where: dict[str, tuple[tuple, SubjectBatch, int]] = {}
    for part in parts:
        for batch in part:
            key = _signature(batch.one(0))
            for i, subject in enumerate(batch.subjects):
                where[subject] = (key, batch, i)
    missing = [s for s in subjects if s not in where]
    if missing:
        raise ValueError(f"subject(s) {missing[:5]} are in no part")
    members: dict[tuple, list[tuple[SubjectBatch, int]]] = {}
    for subject in subjects:
        key, batch, i = where[subject]
        members.setdefault(key, []).append((batch, i))
    merged = []
    for entries in members.values():
        sources = list({id(b): b for b, _ in entries}.values())
        offsets = dict(zip(map(id, sources), np.cumsum([0] + [len(b) for b in sources])))
        index = np.array([offsets[id(b)] + i for b, i in entries])
        stacked = jax.tree.map(lambda *x: np.concatenate(x), *[b.problems for b in sources])
        merged.append(
            SubjectBatch(
                subjects=[b.subjects[i] for b, i in entries],
                groups=[b.groups[i] for b, i in entries],
                problems=jax.tree.map(lambda x, index=index: x[index], stacked),
            )
        )
    return sorted(merged, key=len, reverse=True)
