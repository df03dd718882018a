"""Virtual cohorts: subjects sampled from a population distribution, simulated under a study
design, observed with noise from an error model, written in the dataset format (docs/data.md)
with their true parameters.

The population of each group is log-normal around a preset (the group's typical subject) with
a coefficient of variation per parameter and a correlation matrix:
log θ = log θ_preset + diag(s)·L·z, z ~ N(0, I), L Lᵀ = R, s = √log(1 + CV²).
Draws outside a parameter's plausible range are redrawn (a truncated log-normal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..data._records import insulin_infusion_record
from ..fit._experiment import make_experiment
from ..fit._objective import ErrorModel, combined, proportional
from ..model import MgT2DModel
from ..model._parameters import get_parameters, parameter_infos, set_parameters
from ..model._presets import preset
from ..protocols import HyperinsulinemicClamp, fasting

#: The parameters that differ between subjects of the default cohort: hepatic and peripheral
#: insulin sensitivity, insulin clearance, and the two sides of the Mg²⁺ balance (intake and
#: renal reabsorption in the DCT).
COHORT_PARAMETERS: tuple[str, ...] = (
    "signalling_capacity",
    "egp_max",
    "insulin_clearance_rate",
    "dietary_mg_intake",
    "dct_capacity",
)
#: Between-subject coefficients of variation of the default cohort (insulin sensitivity by
#: clamp varies ~30–40 % within a group; Mg²⁺ intake ~30 %; physiology.md §§1–2).
COHORT_CV: tuple[float, ...] = (0.30, 0.20, 0.25, 0.30, 0.25)
#: Default correlation: insulin-resistant subjects have a higher hepatic glucose output.
COHORT_CORRELATION = {("signalling_capacity", "egp_max"): -0.3}

#: Clamp sampling (min): glucose every 10 min, insulin every 30 min, GIR per 10-min period.
CLAMP_GLUCOSE_TIMES = tuple(float(t) for t in range(0, 121, 10))
CLAMP_INSULIN_TIMES = (0.0, 30.0, 60.0, 90.0, 120.0)
CLAMP_GIR_TIMES = tuple(float(t) for t in range(10, 121, 10))
#: The clamp's insulin infusion (mU/m²/min). Glucose is clamped at each subject's own fasting
#: level (an isoglycaemic clamp, as in many T2DM studies): the dataset format derives the
#: target from the observed glucose (docs/data.md), which then matches the simulated one.
CLAMP_INSULIN_RATE = 40.0


@dataclass(frozen=True)
class Population:
    """One group's distribution: log-normal around `preset` with `cv` per parameter and a
    `correlation` of the log-parameters; body weight (kg) and height (cm) normal. A
    parameter in `weight_exponents` also scales as (weight / `weight_reference`)^exponent
    (a power covariate effect, as population models write it: the preset's value is the
    typical value at the reference weight)."""

    preset: str
    parameters: tuple[str, ...] = COHORT_PARAMETERS
    cv: tuple[float, ...] = COHORT_CV
    correlation: Mapping[tuple[str, str], float] = field(
        default_factory=lambda: dict(COHORT_CORRELATION)
    )
    weight: tuple[float, float] = (80.0, 12.0)
    height: tuple[float, float] = (172.0, 9.0)
    weight_exponents: Mapping[str, float] = field(default_factory=dict)
    weight_reference: float = 80.0

    def __post_init__(self):
        unknown = set(self.weight_exponents) - set(self.parameters)
        if unknown:
            raise ValueError(
                f"weight_exponents: {sorted(unknown)} are not among the population's "
                f"parameters {self.parameters}"
            )
        if not self.weight_reference > 0:
            raise ValueError(f"weight_reference must be positive, not {self.weight_reference}")

    def correlation_matrix(self) -> np.ndarray:
        k = len(self.parameters)
        r = np.eye(k)
        for (a, b), rho in self.correlation.items():
            if a in self.parameters and b in self.parameters:
                i, j = self.parameters.index(a), self.parameters.index(b)
                r[i, j] = r[j, i] = rho
        return r

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """n draws of each parameter (plausible ranges enforced by redrawing)."""
        infos = parameter_infos()
        median = np.log(
            [float(v) for v in get_parameters(preset(self.preset), self.parameters).values()]
        )
        scale = np.sqrt(np.log1p(np.square(self.cv)))
        chol = np.linalg.cholesky(self.correlation_matrix())
        lower = np.log([infos[p].lower for p in self.parameters])
        upper = np.log([infos[p].upper for p in self.parameters])
        out = np.empty((n, len(self.parameters)))
        filled = 0
        while filled < n:
            z = rng.standard_normal((n, len(self.parameters))) @ chol.T
            x = median + z * scale
            ok = np.all((x > lower) & (x < upper), axis=1)
            take = x[ok][: n - filled]
            out[filled : filled + len(take)] = take
            filled += len(take)
        return {p: np.exp(out[:, i]) for i, p in enumerate(self.parameters)}


#: Group presets of the default cohort: name → population.
GROUPS: dict[str, Population] = {
    "healthy": Population("healthy", weight=(76.0, 11.0)),
    "t2dm": Population("t2dm", weight=(88.0, 14.0)),
    "t2dm_hypomagnesemia": Population("t2dm_hypomagnesemia", weight=(90.0, 14.0)),
}

#: The default error model of synthetic data (and of fitting it): proportional 5 % (3 % for
#: glucose, measured by a glucose analyser), GIR combined 0.1 mg/kg/min + 5 %.
COHORT_ERROR_MODELS: dict[str, ErrorModel] = {
    "glucose": proportional(0.03),
    "insulin": proportional(0.08),
    "glucose_infusion": combined(0.1, 0.05),
    "serum_mg": proportional(0.03),
    "urinary_mg_24h": proportional(0.10),
}

#: Dataset units of each observable in the written CSV (what a lab reports).
_REPORT_UNITS = {
    "glucose": "mmol/L",
    "insulin": "pmol/L",
    "glucose_infusion": "mg/kg/min",
    "serum_mg": "mmol/L",
    "urinary_mg_24h": "mmol/day",
}


def study_design() -> dict[str, tuple[object, dict[str, tuple[float, ...]]]]:
    """The default per-subject design: protocol name → (protocol, {observable: times (min)}).

    A 120-min hyperinsulinaemic isoglycaemic clamp (40 mU/m²/min, glucose held at the
    subject's fasting level) and fasting labs (serum Mg²⁺, 24-h urinary Mg²⁺)."""
    clamp = HyperinsulinemicClamp(insulin_rate=CLAMP_INSULIN_RATE, duration=120.0)
    return {
        "hyperinsulinemic_clamp": (
            clamp,
            {
                "glucose": CLAMP_GLUCOSE_TIMES,
                "insulin": CLAMP_INSULIN_TIMES,
                "glucose_infusion": CLAMP_GIR_TIMES,
            },
        ),
        "fasting": (fasting(), {"serum_mg": (0.0,), "urinary_mg_24h": (0.0,)}),
    }


@dataclass
class Cohort:
    """A virtual cohort as dataset tables (docs/data.md) plus the truth."""

    observations: pd.DataFrame
    doses: pd.DataFrame
    subjects: pd.DataFrame
    truth: pd.DataFrame  # subject, parameter, value, unit
    #: Subjects drawn again because a simulation of theirs failed (their ids are kept).
    redrawn: list[str] = field(default_factory=list)

    def write(self, folder: str | Path) -> Path:
        """Write observations.csv, doses.csv, subjects.csv and truth.csv into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("observations", "doses", "subjects", "truth"):
            getattr(self, name).to_csv(folder / f"{name}.csv", index=False)
        return folder


@eqx.filter_jit
def _predict_all(models, experiment):
    return jax.vmap(lambda m: experiment.predict(m))(models)


def synthesize(
    n: int | Mapping[str, int],
    *,
    groups: Mapping[str, Population] | None = None,
    error_models: Mapping[str, ErrorModel] | None = None,
    seed: int = 0,
    prefix: str = "s",
) -> Cohort:
    """A virtual cohort of `n` subjects (split evenly over the groups, or `{group: n}`),
    each given the default `study_design()`, observed with noise from `error_models`
    (default `COHORT_ERROR_MODELS`). Deterministic for a given `seed`."""
    groups = dict(groups or GROUPS)
    error_models = dict(error_models or COHORT_ERROR_MODELS)
    counts = _group_counts(n, groups)
    rng = np.random.default_rng(seed)
    width = max(4, len(str(max(sum(counts.values()) - 1, 0))))
    subjects = _Subjects()
    for group, count in counts.items():
        if count:
            _sample_group(subjects, group, groups[group], count, rng, prefix, width)
    # every subject of every group in one vmapped simulation per protocol
    stacked = jax.tree.map(lambda *x: jnp.concatenate(x), *subjects.models)
    design = study_design()
    predictions = {
        name: _simulate(stacked, protocol, plan) for name, (protocol, plan) in design.items()
    }
    redrawn = _redraw_failures(subjects, stacked, predictions, design, groups, rng, prefix, width)
    obs_rows, dose_rows = [], []
    for protocol_name, (_, plan) in design.items():
        observed, doses = _observe(
            predictions[protocol_name][0], subjects.ids, protocol_name, plan, error_models, rng
        )
        obs_rows += observed
        dose_rows += doses
    observations = pd.DataFrame(obs_rows).sort_values(
        ["subject", "protocol", "observable", "time"], kind="stable"
    )
    return Cohort(
        observations=observations.reset_index(drop=True),
        doses=pd.DataFrame(dose_rows),
        subjects=pd.DataFrame(subjects.rows),
        truth=pd.DataFrame(subjects.truth),
        redrawn=redrawn,
    )


#: Times a subject whose simulation fails is drawn again before `synthesize` gives up.
MAX_REDRAWS = 5


def _simulate(models, protocol, plan) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, success) of every subject under one protocol of the design."""
    times = [t for ts in plan.values() for t in ts]
    names = [name for name, ts in plan.items() for _ in ts]
    experiment = make_experiment(protocol, times, names, np.zeros(len(times)))
    predictions, success = _predict_all(models, experiment)
    return np.array(predictions), np.array(success) & np.all(np.isfinite(predictions), axis=1)


def _redraw_failures(subjects, stacked, predictions, design, groups, rng, prefix, width):
    """Draw again (same group, same id) every subject with a failed simulation, until all
    simulate or `MAX_REDRAWS` rounds are spent; `predictions` updated in place. Returns the
    redrawn ids. Uses no random numbers when nothing failed (a cohort stays reproducible)."""
    redrawn: list[str] = []
    for _ in range(MAX_REDRAWS):
        failed = np.flatnonzero(~np.all([ok for _, ok in predictions.values()], axis=0))
        if failed.size == 0:
            return redrawn
        for i in failed.tolist():
            new = _Subjects()
            group = subjects.rows[i]["group"]
            _sample_group(new, group, groups[group], 1, rng, prefix, width)
            subjects.replace(i, new)
            redrawn.append(subjects.ids[i])
        models = jax.tree.map(
            lambda *x: jnp.concatenate(x), *[subjects.model(i) for i in failed.tolist()]
        )
        for name, (protocol, plan) in design.items():
            values, ok = _simulate(models, protocol, plan)
            predictions[name][0][failed], predictions[name][1][failed] = values, ok
    failed = np.flatnonzero(~np.all([ok for _, ok in predictions.values()], axis=0))
    if failed.size:
        ids = [subjects.ids[i] for i in failed[:5]]
        raise RuntimeError(
            f"the simulations of subject(s) {ids} failed after {MAX_REDRAWS} redraws; check "
            "the groups' parameter distributions"
        )
    return sorted(set(redrawn))


def _group_counts(n: int | Mapping[str, int], groups: Mapping[str, Population]) -> dict[str, int]:
    """Subjects per group: `{group: n}` as given, or `n` split evenly (the first groups get
    one more when it does not divide)."""
    if isinstance(n, Mapping):
        counts = {g: int(k) for g, k in n.items()}
        unknown = set(counts) - set(groups)
        if unknown:
            raise KeyError(f"unknown group(s) {sorted(unknown)}; known: {', '.join(groups)}")
        return counts
    names = list(groups)
    return {g: n // len(names) + (i < n % len(names)) for i, g in enumerate(names)}


@dataclass
class _Subjects:
    """The sampled subjects: ids, their models (one batched model per group), subject-table
    rows and true parameter values."""

    ids: list[str] = field(default_factory=list)
    models: list[MgT2DModel] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    truth: list[dict] = field(default_factory=list)

    def _locate(self, i: int) -> tuple[int, int]:
        """(group batch, index within it) of subject `i`."""
        for k, batch in enumerate(self.models):
            n = len(jax.tree.leaves(batch)[0])
            if i < n:
                return k, i
            i -= n
        raise IndexError(i)

    def model(self, i: int) -> MgT2DModel:
        """Subject `i`'s model, with a leading axis of 1."""
        k, j = self._locate(i)
        return jax.tree.map(lambda x: x[j : j + 1], self.models[k])

    def replace(self, i: int, new: "_Subjects") -> None:
        """Subject `i` becomes `new`'s only subject (keeping id `self.ids[i]`)."""
        sid = self.ids[i]
        k, j = self._locate(i)
        self.models[k] = jax.tree.map(lambda x, y: x.at[j].set(y[0]), self.models[k], new.models[0])
        self.rows[i] = {**new.rows[0], "subject": sid}
        self.truth = [t for t in self.truth if t["subject"] != sid] + [
            {**t, "subject": sid} for t in new.truth
        ]


def _sample_group(
    subjects: _Subjects,
    group: str,
    population: Population,
    count: int,
    rng: np.random.Generator,
    prefix: str,
    width: int,
) -> None:
    """Draw `count` subjects of `group` (parameters, then weight (kg), then height (cm)) and
    add them to `subjects`."""
    values = population.sample(count, rng)
    weight = np.clip(rng.normal(*population.weight, size=count), 45.0, 180.0)
    height = np.clip(rng.normal(*population.height, size=count), 145.0, 205.0)
    for name, exponent in population.weight_exponents.items():
        values[name] = values[name] * (weight / population.weight_reference) ** exponent
    group_ids = [f"{prefix}{len(subjects.ids) + i:0{width}d}" for i in range(count)]
    subjects.ids.extend(group_ids)
    base = preset(population.preset)
    subjects.models.append(
        jax.vmap(lambda v, w, h: set_parameters(base, {**v, "body_weight": w, "height": h}))(
            {k: jnp.asarray(v) for k, v in values.items()},
            jnp.asarray(weight),
            jnp.asarray(height),
        )
    )
    infos = parameter_infos()
    for i, sid in enumerate(group_ids):
        subjects.rows.append(
            dict(
                subject=sid,
                group=group,
                weight=round(float(weight[i]), 1),
                height=round(float(height[i]), 1),
            )
        )
        for p in population.parameters:
            subjects.truth.append(
                dict(subject=sid, parameter=p, value=float(values[p][i]), unit=infos[p].unit)
            )


def _observe(predictions, ids, protocol_name, plan, error_models, rng):
    """Observation rows (and, for the clamp, dose rows) of one protocol of the design for
    every subject: predictions with noise from the error models, floored at 0."""
    times = [t for ts in plan.values() for t in ts]
    names = [name for name, ts in plan.items() for _ in ts]
    em = [error_models[name] for name in names]
    a = np.array([float(e.additive) for e in em])
    b = np.array([float(e.proportional) for e in em])
    sigma = np.sqrt(a**2 + (b * predictions) ** 2)
    noisy = np.maximum(predictions + sigma * rng.standard_normal(predictions.shape), 0.0)
    obs_rows, dose_rows = [], []
    for i, sid in enumerate(ids):
        for j, (t, name) in enumerate(zip(times, names)):
            obs_rows.append(
                dict(
                    subject=sid,
                    protocol=protocol_name,
                    time=t,
                    time_unit="min",
                    observable=name,
                    value=float(f"{noisy[i, j]:.6g}"),
                    unit=_REPORT_UNITS[name],
                )
            )
        if protocol_name == "hyperinsulinemic_clamp":
            dose_rows.append(_clamp_dose(sid, protocol_name))
    return obs_rows, dose_rows


def _clamp_dose(sid: str, protocol_name: str) -> dict:
    """The clamp's insulin infusion, as a dose-table row."""
    return insulin_infusion_record(sid, protocol_name, CLAMP_INSULIN_RATE)


def cohort_error_models(observables: Sequence[str]) -> dict[str, ErrorModel]:
    """The default error models for the given observables (5 % proportional otherwise)."""
    return {o: COHORT_ERROR_MODELS.get(o, proportional(0.05)) for o in observables}
