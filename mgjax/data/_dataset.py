"""The dataset format (docs/data.md): long-format CSV files, validated where they enter.

- `observations.csv` (required): subject, protocol, time, time_unit, observable, value, unit;
  optional sigma (in the value's unit), sd and n (summary-level data: sigma = sd/√n), arm.
- `doses.csv` (optional): subject, protocol, time, time_unit, route, substance, amount, unit;
  optional duration (min), repeat_every (in time_unit), repeat_count, salt.
- `subjects.csv` (optional): subject; optional weight (kg), height (cm), sex, age, group, and any
  further covariate columns.

Bad input is refused with one message naming the file, the row (1-based, as a spreadsheet shows
it, header = row 1), the column and what to do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..model import OBSERVABLE_UNITS
from ._units import UNITS, UnitError, to_model_units

PROTOCOLS = ("fasting", "hyperinsulinemic_clamp", "hyperglycemic_clamp", "ivgtt", "mg_trial")
TIME_UNITS = {
    "min": 1.0,
    "minute": 1.0,
    "minutes": 1.0,
    "h": 60.0,
    "hour": 60.0,
    "hours": 60.0,
    "day": 1440.0,
    "days": 1440.0,
    "d": 1440.0,
    "week": 10080.0,
    "weeks": 10080.0,
    "wk": 10080.0,
    "month": 43830.0,
    "months": 43830.0,
}
#: Observables a dataset may contain: every model observable, the 24-h urine collection, and
#: clinical aliases.
DERIVED_OBSERVABLES = ("urinary_mg_24h",)
ALIASES = {
    "fasting_glucose": "glucose",
    "gir": "glucose_infusion",
    "mg": "serum_mg",
    "plasma_mg": "serum_mg",
    "ionised_mg": "ionized_mg",
}
KNOWN_OBSERVABLES = tuple(
    sorted(o for o in set(OBSERVABLE_UNITS) | set(DERIVED_OBSERVABLES) if o in UNITS)
)
#: Observables that are concentrations or amounts and cannot be negative.
NON_NEGATIVE = set(KNOWN_OBSERVABLES) - {"membrane_potential"}
OBSERVATION_COLUMNS = ("subject", "protocol", "time", "time_unit", "observable", "value", "unit")
DOSE_COLUMNS = ("subject", "protocol", "time", "time_unit", "route", "substance", "amount", "unit")
DOSE_KINDS = {
    ("iv", "insulin"): ("mU/m2/min", "mU/kg/min", "U/kg"),
    ("iv", "glucose"): ("mg/kg/min", "g/kg"),
    ("oral", "magnesium"): ("mmol", "mg", "mEq"),
    ("iv", "magnesium"): ("mmol", "mg", "mEq"),
}


class DatasetError(ValueError):
    """Bad input: the message names the file, row, column and the fix."""


def _where(path: Path, row: int | None = None, column: str | None = None) -> str:
    out = f"{path.name}"
    if row is not None:
        out += f", row {row}"
    if column is not None:
        out += f", column '{column}'"
    return out


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: file not found") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DatasetError(
            f"{path.name}: not a readable CSV file ({e}); save it as UTF-8 CSV"
        ) from e
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path.name}: missing column(s) {', '.join(repr(c) for c in missing)}; the header "
            f"must contain {', '.join(required)} (see docs/data.md)"
        )
    if frame.empty:
        raise DatasetError(f"{path.name}: no data rows")
    return frame


def _number(path, frame, column, *, required=True, positive=False, non_negative=False):
    """Column as floats; refuses text, NaN, inf and (optionally) non-positive values."""
    out = np.full(len(frame), np.nan)
    for i, raw in enumerate(frame[column].tolist()):
        row = i + 2
        text = str(raw).strip()
        if text == "":
            if required:
                raise DatasetError(f"{_where(path, row, column)}: empty; give a number")
            continue
        try:
            value = float(text)
        except ValueError:
            raise DatasetError(
                f"{_where(path, row, column)}: {text!r} is not a number; give a decimal number "
                "(no units or text in numeric columns)"
            ) from None
        if not math.isfinite(value):
            raise DatasetError(
                f"{_where(path, row, column)}: {text} is not a finite number; remove the row or "
                "give the measured value"
            )
        if positive and value <= 0:
            raise DatasetError(f"{_where(path, row, column)}: {value:g} must be > 0")
        if non_negative and value < 0:
            raise DatasetError(
                f"{_where(path, row, column)}: {value:g} is negative; a concentration or amount "
                "cannot be negative — check the sign or the unit"
            )
        out[i] = value
    return out


def _time_in_minutes(path, frame, times):
    out = np.empty(len(frame))
    for i, unit in enumerate(frame["time_unit"].tolist()):
        key = str(unit).strip()
        if key not in TIME_UNITS:
            raise DatasetError(
                f"{_where(path, i + 2, 'time_unit')}: unknown time unit {key!r}; use one of "
                f"{', '.join(sorted(set(TIME_UNITS)))}"
            )
        out[i] = times[i] * TIME_UNITS[key]
    return out


def _check_protocols(path, frame):
    for i, name in enumerate(frame["protocol"].tolist()):
        if str(name).strip() not in PROTOCOLS:
            raise DatasetError(
                f"{_where(path, i + 2, 'protocol')}: unknown protocol {name!r}; use one of "
                f"{', '.join(PROTOCOLS)}"
            )


def _check_subjects(path, frame):
    for i, name in enumerate(frame["subject"].tolist()):
        if str(name).strip() == "":
            raise DatasetError(f"{_where(path, i + 2, 'subject')}: empty; give a subject id")


@dataclass
class Dataset:
    """A validated dataset, in model units (times in min, values in `OBSERVABLE_UNITS`).

    - `observations`: one row per measurement: subject, protocol, time (min), observable,
      value, sigma (model units; NaN = from the error model), arm;
    - `doses`: one row per dose record (amounts in the units listed in docs/data.md);
    - `subjects`: one row per subject: weight, height and covariates.
    """

    observations: pd.DataFrame
    doses: pd.DataFrame
    subjects: pd.DataFrame
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def subject_ids(self) -> list[str]:
        return list(dict.fromkeys(self.observations["subject"]))

    def for_subject(self, subject: str) -> "Dataset":
        return Dataset(
            observations=self.observations[self.observations["subject"] == subject],
            doses=self.doses[self.doses["subject"] == subject],
            subjects=self.subjects[self.subjects["subject"] == subject],
            source=self.source,
        )


def _optional_number(path: Path, frame: pd.DataFrame, column: str, **checks) -> np.ndarray:
    """An optional numeric column (NaN where empty, or everywhere if the column is absent)."""
    if column in frame.columns:
        return _number(path, frame, column, required=False, **checks)
    return np.full(len(frame), np.nan)


def _load_observations(path: Path, subject_weights: dict[str, float]) -> pd.DataFrame:
    frame = _read_csv(path, OBSERVATION_COLUMNS)
    _check_subjects(path, frame)
    _check_protocols(path, frame)
    time = _time_in_minutes(path, frame, _number(path, frame, "time"))
    raw_values = _number(path, frame, "value")
    sigma = _observation_sigma(path, frame)
    observables, values, sigmas = _in_model_units(path, frame, raw_values, sigma, subject_weights)
    out = pd.DataFrame(
        dict(
            subject=frame["subject"].str.strip(),
            protocol=frame["protocol"].str.strip(),
            time=time,
            observable=observables,
            value=values,
            sigma=sigmas,
            arm=frame["arm"].str.strip() if "arm" in frame.columns else "",
            row=np.arange(2, len(frame) + 2),
        )
    )
    _check_times(path, out)
    return out


def _observation_sigma(path: Path, frame: pd.DataFrame) -> np.ndarray:
    """Each row's standard deviation (file units): `sigma`, else the standard error sd/√n of
    a summary row; NaN: from the error model."""
    sigma = _optional_number(path, frame, "sigma", positive=True)
    if "sd" in frame.columns:
        sd = _number(path, frame, "sd", required=False, positive=True)
        n = _optional_number(path, frame, "n", positive=True)
        summary = ~np.isnan(sd)
        if np.any(summary & np.isnan(n)):
            row = int(np.argmax(summary & np.isnan(n))) + 2
            raise DatasetError(
                f"{_where(path, row, 'n')}: a summary row (sd given) needs the number of subjects "
                "n, so that its standard error sd/√n can be used"
            )
        sigma = np.where(summary & np.isnan(sigma), sd / np.sqrt(np.where(summary, n, 1.0)), sigma)
    return sigma


def _in_model_units(path, frame, raw_values, sigma, subject_weights):
    """(observable names, values, sigmas) of every row, names resolved and in model units."""
    observables, values, sigmas = [], np.empty(len(frame)), np.empty(len(frame))
    for i, (name, unit) in enumerate(zip(frame["observable"].tolist(), frame["unit"].tolist())):
        row = i + 2
        key = _observable_key(path, row, name, raw_values[i])
        context = {"body_weight": subject_weights.get(str(frame["subject"].iloc[i]).strip())}
        try:
            values[i] = to_model_units(key, raw_values[i], str(unit), **context)
            sigmas[i] = (
                np.nan if np.isnan(sigma[i]) else _sigma_to_model(key, sigma[i], str(unit), context)
            )
        except UnitError as e:
            raise DatasetError(f"{_where(path, row, 'unit')}: {e}") from None
        observables.append(key)
    return observables, values, sigmas


def _observable_key(path: Path, row: int, name: Any, value: float) -> str:
    """The observable's name (aliases resolved), checked to be known and, for concentrations
    and amounts, its value non-negative."""
    key = ALIASES.get(str(name).strip(), str(name).strip())
    if key not in KNOWN_OBSERVABLES:
        raise DatasetError(
            f"{_where(path, row, 'observable')}: unknown observable {name!r}; use one of "
            f"{', '.join(KNOWN_OBSERVABLES)}"
        )
    if key in NON_NEGATIVE and value < 0:
        raise DatasetError(
            f"{_where(path, row, 'value')}: {value:g} is negative; a concentration or "
            "amount cannot be negative — check the sign or the unit"
        )
    return key


def _check_times(path: Path, out: pd.DataFrame) -> None:
    """Each subject's series of one observable under one protocol: increasing, from 0."""
    for (subject, protocol, observable), group in out.groupby(
        ["subject", "protocol", "observable"], sort=False
    ):
        t = group["time"].to_numpy()
        if np.any(np.diff(t) < 0):
            k = int(np.argmax(np.diff(t) < 0)) + 1
            raise DatasetError(
                f"{_where(path, int(group['row'].iloc[k]), 'time')}: times out of order for "
                f"subject {subject!r}, {protocol}, {observable} ({t[k - 1]:g} then {t[k]:g} min); "
                "sort each subject's measurements by time"
            )
        if np.any(t < 0):
            k = int(np.argmax(t < 0))
            raise DatasetError(
                f"{_where(path, int(group['row'].iloc[k]), 'time')}: negative time; times count "
                "from the protocol's start (0)"
            )


def _sigma_to_model(observable: str, sigma: float, unit: str, context: dict) -> float:
    """A standard deviation given in `unit`, in model units (affine units: difference of two)."""
    zero = to_model_units(observable, 0.0, unit, **context)
    return float(abs(to_model_units(observable, sigma, unit, **context) - zero))


def _load_doses(path: Path) -> pd.DataFrame:
    frame = _read_csv(path, DOSE_COLUMNS)
    _check_subjects(path, frame)
    _check_protocols(path, frame)
    time = _time_in_minutes(path, frame, _number(path, frame, "time", non_negative=True))
    amount = _number(path, frame, "amount", non_negative=True)
    duration = _optional_number(path, frame, "duration", positive=True)
    every = _optional_number(path, frame, "repeat_every", positive=True)
    count = _optional_number(path, frame, "repeat_count", positive=True)
    for i in range(len(frame)):
        _check_dose(path, frame, i, every[i], count[i])
    unit_factor = np.array([TIME_UNITS[u.strip()] for u in frame["time_unit"]])
    return pd.DataFrame(
        dict(
            subject=frame["subject"].str.strip(),
            protocol=frame["protocol"].str.strip(),
            time=time,
            route=frame["route"].str.strip(),
            substance=frame["substance"].str.strip(),
            amount=amount,
            unit=frame["unit"].str.strip(),
            duration=duration,
            repeat_every=every * unit_factor,
            repeat_count=count,
            salt=frame["salt"].str.strip() if "salt" in frame.columns else "",
        )
    )


def _check_dose(path: Path, frame: pd.DataFrame, i: int, every: float, count: float) -> None:
    """Dose row `i`: a known route and substance in one of its units; repeats complete."""
    row = i + 2
    kind = (frame["route"].iloc[i].strip(), frame["substance"].iloc[i].strip())
    if kind not in DOSE_KINDS:
        raise DatasetError(
            f"{_where(path, row, 'route')}: unknown dose {kind[0]!r} {kind[1]!r}; use one of "
            + ", ".join(f"{r} {s}" for r, s in DOSE_KINDS)
        )
    if frame["unit"].iloc[i].strip() not in DOSE_KINDS[kind]:
        raise DatasetError(
            f"{_where(path, row, 'unit')}: unit {frame['unit'].iloc[i]!r} for {kind[0]} "
            f"{kind[1]}; use one of {', '.join(DOSE_KINDS[kind])}"
        )
    if np.isnan(every) != np.isnan(count):
        raise DatasetError(
            f"{_where(path, row, 'repeat_count')}: give both repeat_every and repeat_count, "
            "or neither"
        )


def _load_subjects(path: Path) -> pd.DataFrame:
    frame = _read_csv(path, ("subject",))
    _check_subjects(path, frame)
    duplicated = frame["subject"].str.strip().duplicated()
    if duplicated.any():
        row = int(np.argmax(duplicated.to_numpy())) + 2
        raise DatasetError(f"{_where(path, row, 'subject')}: subject listed twice; one row each")
    out = pd.DataFrame(dict(subject=frame["subject"].str.strip()))
    for column, lo, hi in [("weight", 20.0, 400.0), ("height", 100.0, 250.0), ("age", 0.0, 120.0)]:
        if column in frame.columns:
            values = _number(path, frame, column, required=False, positive=True)
            bad = ~np.isnan(values) & ((values < lo) | (values > hi))
            if bad.any():
                row = int(np.argmax(bad)) + 2
                unit = {"weight": "kg", "height": "cm", "age": "years"}[column]
                raise DatasetError(
                    f"{_where(path, row, column)}: {values[bad][0]:g} is outside {lo:g}–{hi:g}; "
                    f"give {column} in {unit}"
                )
            out[column] = values
    for column in frame.columns:
        if column not in out.columns:
            out[column] = frame[column].str.strip()
    return out


def load_dataset(directory: str | Path) -> Dataset:
    """Read and validate `observations.csv` (and `doses.csv`, `subjects.csv` if present) from
    `directory`. Raises `DatasetError` naming file, row, column and the fix."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(
            f"{directory}: not a directory; give the folder holding observations.csv"
        )
    subjects = (
        _load_subjects(directory / "subjects.csv")
        if (directory / "subjects.csv").exists()
        else pd.DataFrame(dict(subject=[]))
    )
    weights = (
        dict(zip(subjects["subject"], subjects["weight"])) if "weight" in subjects.columns else {}
    )
    observations = _load_observations(directory / "observations.csv", weights)
    doses = (
        _load_doses(directory / "doses.csv")
        if (directory / "doses.csv").exists()
        else pd.DataFrame(
            columns=[
                "subject",
                "protocol",
                "time",
                "route",
                "substance",
                "amount",
                "unit",
                "duration",
                "repeat_every",
                "repeat_count",
                "salt",
            ]
        )
    )
    observed = set(observations["subject"])
    for name, frame in [("subjects.csv", subjects), ("doses.csv", doses)]:
        for i, subject in enumerate(frame["subject"].tolist()):
            if subject not in observed:
                raise DatasetError(
                    f"{name}, row {i + 2}, column 'subject': subject {subject!r} has no "
                    "observations; add its measurements to observations.csv or remove the row"
                )
    return Dataset(observations=observations, doses=doses, subjects=subjects, source=str(directory))
