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

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..model import OBSERVABLE_UNITS
from ..protocols import SALT_BIOAVAILABILITY
from ._units import UNITS, UnitError, implausible_value, to_model_units

PROTOCOLS = (
    "fasting",
    "hyperinsulinemic_clamp",
    "hyperglycemic_clamp",
    "ivgtt",
    "ogtt",
    "mg_trial",
    "forced_glucose",
)
#: The protocol of a forced-glucose secretion experiment: the beta-cell alone, driven by the
#: measured plasma glucose (its `glucose` rows, the input), observed through the observables
#: of `FORCED_GLUCOSE_OBSERVED`.
FORCED_GLUCOSE = "forced_glucose"
FORCED_GLUCOSE_OBSERVED = ("insulin_secretion", "c_peptide")
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
    ("oral", "glucose"): ("g",),
}


#: At most this many problems are listed per load (`mgjax check` shows them all, up to it).
MAX_PROBLEMS = 50
#: Times (and the span of repeated doses) beyond ten years are refused: no study runs longer.
MAX_MINUTES = 10 * 365.25 * 1440.0
#: Doses one record may repeat (daily for 100 years): more is a typing error.
MAX_REPEATS = 36525
#: Largest plausible single dose per (route, substance) and unit: above it a unit mix-up is likely.
DOSE_LIMITS = {
    ("iv", "insulin"): {"mU/m2/min": 2000.0, "mU/kg/min": 50.0, "U/kg": 1.0},
    ("iv", "glucose"): {"mg/kg/min": 50.0, "g/kg": 2.0},
    ("oral", "magnesium"): {"mmol": 100.0, "mg": 2500.0, "mEq": 200.0},
    ("iv", "magnesium"): {"mmol": 100.0, "mg": 2500.0, "mEq": 200.0},
    ("oral", "glucose"): {"g": 150.0},
}
#: Covariates with a unit: (low, high, unit, {other unit: factor to this unit}).
COVARIATE_RANGES = {
    "weight": (20.0, 400.0, "kg", {"lb": 0.45359237}),
    "height": (100.0, 250.0, "cm", {"m": 100.0, "in": 2.54}),
    "age": (0.0, 120.0, "years", {"months": 1.0 / 12.0}),
    "bmi": (10.0, 100.0, "kg/m2", {}),
    "egfr": (1.0, 250.0, "mL/min/1.73m2", {}),
}
#: Longest cell text a message quotes.
SHOWN = 40


class DatasetError(ValueError):
    """Bad input: each problem is one line naming the file, row, column and the fix;
    `problems` lists every problem found in one pass (up to `MAX_PROBLEMS`)."""

    def __init__(
        self, message: str | None = None, *, problems: tuple[str, ...] = (), more: int = 0
    ):
        self.problems = list(problems) if problems else [str(message)]
        self.more = more
        super().__init__(message if message is not None else _summary(self.problems, more))


def _summary(problems: list[str], more: int) -> str:
    if len(problems) == 1 and not more:
        return problems[0]
    total = len(problems) + more
    lines = [f"{total} problems in the dataset:"] + [f"  - {p}" for p in problems]
    if more:
        lines.append(f"  … and {more} more (fix these and check again)")
    return "\n".join(lines)


class _Problems:
    """Problems found so far (the loader goes on after each, to report all in one pass)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.more = 0

    def add(self, text: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(text)
        else:
            self.more += 1

    def __len__(self) -> int:
        return len(self.items) + self.more

    def raise_any(self) -> None:
        if self.items:
            raise DatasetError(problems=tuple(self.items), more=self.more)


def _show(text: Any) -> str:
    """`text` quoted for a message, cut to `SHOWN` characters."""
    text = str(text)
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "…")


def _where(path: Path, row: int | np.integer | None = None, column: str | None = None) -> str:
    out = f"{path.name}"
    if row is not None:
        out += f", row {row}"
    if column is not None:
        out += f", column {_show(column)}"
    return out


def _read_text(path: Path, problems: _Problems) -> str | None:
    """The file's text, or None (with the problem noted) if it cannot be read as UTF-8."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problems.add(f"{path}: file not found")
        return None
    except IsADirectoryError:
        problems.add(f"{path.name}: is a folder, not a CSV file; give a CSV file of that name")
        return None
    except OSError as e:
        problems.add(f"{path.name}: cannot be read ({e.strerror}); check its permissions")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        problems.add(f"{path.name}: not UTF-8 text (byte {e.start}); save it as a UTF-8 CSV file")
        return None
    if "\x00" in text:
        problems.add(f"{path.name}: holds NUL bytes (a binary file?); save it as a UTF-8 CSV file")
        return None
    return text


def _header(path: Path, fields: list[str], required: tuple[str, ...], problems: _Problems):
    """The stripped column names, or None if they are unusable (problems noted)."""
    names = [f.strip() for f in fields]
    ok = True
    for k, name in enumerate(names):
        if name == "":
            problems.add(
                f"{path.name}, row 1: column {k + 1} has no name; name it or remove the column"
            )
            ok = False
        elif name in names[:k]:
            first = names.index(name)
            problems.add(
                f"{path.name}, row 1: columns {first + 1} and {k + 1} are both named "
                f"{_show(name)} (after removing spaces); rename or remove one"
            )
            ok = False
    missing = [c for c in required if c not in names]
    if missing:
        problems.add(
            f"{path.name}: missing column(s) {', '.join(repr(c) for c in missing)}; the header "
            f"must contain {', '.join(required)} (see docs/data.md)"
        )
        ok = False
    return names if ok else None


def _read_csv(path: Path, required: tuple[str, ...], problems: _Problems) -> pd.DataFrame | None:
    """The file as text cells, indexed by spreadsheet row (header = row 1); None if unusable.
    Blank lines are skipped; a row with more fields than the header is refused."""
    text = _read_text(path, problems)
    if text is None:
        return None
    if text.strip() == "":
        problems.add(
            f"{path.name}: empty file; the first line must be the header "
            f"({', '.join(required)}, see docs/data.md)"
        )
        return None
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    header = _next_fields(path, reader, problems)
    names = _header(path, header, required, problems) if header is not None else None
    if names is None:
        return None
    rows, records = [], []
    while (fields := _next_fields(path, reader, problems)) != []:
        if not fields or all(f.strip() == "" for f in fields):  # a blank or unreadable line
            continue
        if len(fields) > len(names):
            problems.add(
                f"{path.name}, row {reader.line_num}: {len(fields)} fields but the header has "
                f"{len(names)} columns; remove the extra separators or name the column"
            )
            continue
        rows.append(reader.line_num)
        records.append(fields + [""] * (len(names) - len(fields)))
    if not records:
        problems.add(f"{path.name}: no data rows")
        return None
    return pd.DataFrame(records, columns=names, index=rows, dtype=str)


def _next_fields(path: Path, reader, problems: _Problems) -> list[str] | None:
    """The next record's fields; [] at the end; None (noted) for a line the CSV reader refuses
    (e.g. a field over its size limit), after which reading goes on."""
    try:
        return next(reader) or [""]
    except StopIteration:
        return []
    except csv.Error as e:
        problems.add(
            f"{path.name}, row {reader.line_num}: not a readable CSV line ({str(e)[:80]}); "
            "shorten the field or save the file as CSV"
        )
        return None


def _cell_number(
    path,
    row,
    column,
    text,
    *,
    required=True,
    positive=False,
    non_negative=False,
    problems: _Problems,
) -> float:
    """One numeric cell; NaN (with the problem noted) if empty, text, non-finite or of the
    wrong sign."""
    text = str(text).strip()
    where = _where(path, row, column)
    if text == "":
        if required:
            problems.add(f"{where}: empty; give a number")
        return math.nan
    try:
        value = float(text)
    except ValueError:
        problems.add(
            f"{where}: {_show(text)} is not a number; give a decimal number "
            "(no units or text in numeric columns)"
        )
        return math.nan
    if not math.isfinite(value):
        problems.add(
            f"{where}: {text[:SHOWN]} is not a finite number; remove the row or give the measured "
            "value"
        )
        return math.nan
    if positive and value <= 0:
        problems.add(f"{where}: {value:g} must be > 0")
        return math.nan
    if non_negative and value < 0:
        problems.add(
            f"{where}: {value:g} is negative; a concentration or amount cannot be negative — "
            "check the sign or the unit"
        )
        return math.nan
    return value


def _number(path, frame, column, problems, *, required=True, positive=False, non_negative=False):
    """Column as floats (NaN where empty or refused; each refusal noted)."""
    return np.array(
        [
            _cell_number(
                path,
                row,
                column,
                text,
                required=required,
                positive=positive,
                non_negative=non_negative,
                problems=problems,
            )
            for row, text in zip(frame.index, frame[column].tolist())
        ],
        dtype=float,
    )


def _optional_number(path, frame, column, problems, **checks) -> np.ndarray:
    """An optional numeric column (NaN where empty, or everywhere if the column is absent)."""
    if column in frame.columns:
        return _number(path, frame, column, problems, required=False, **checks)
    return np.full(len(frame), np.nan)


def _time_in_minutes(path, frame, times, problems) -> np.ndarray:
    """Times (min): the `time_unit` known, the result within `MAX_MINUTES`."""
    out = np.full(len(frame), np.nan)
    for i, (row, unit) in enumerate(zip(frame.index, frame["time_unit"].tolist())):
        key = str(unit).strip()
        if key not in TIME_UNITS:
            problems.add(
                f"{_where(path, row, 'time_unit')}: unknown time unit {_show(key)}; use one of "
                f"{', '.join(sorted(set(TIME_UNITS)))}"
            )
            continue
        if np.isnan(times[i]):
            continue
        if not abs(times[i]) <= MAX_MINUTES / TIME_UNITS[key]:
            problems.add(
                f"{_where(path, row, 'time')}: {times[i]:g} {key} is beyond ten years; check the "
                "value and its time_unit"
            )
            continue
        out[i] = times[i] * TIME_UNITS[key]
    return out


def _check_protocols(path, frame, problems) -> np.ndarray:
    """Rows whose protocol is known (each unknown one noted)."""
    ok = np.ones(len(frame), bool)
    for i, (row, name) in enumerate(zip(frame.index, frame["protocol"].tolist())):
        if str(name).strip() not in PROTOCOLS:
            problems.add(
                f"{_where(path, row, 'protocol')}: unknown protocol {_show(name)}; use one of "
                f"{', '.join(PROTOCOLS)}"
            )
            ok[i] = False
    return ok


def _check_subjects(path, frame, problems) -> np.ndarray:
    """Rows with a subject id (each empty one noted)."""
    ok = np.ones(len(frame), bool)
    for i, (row, name) in enumerate(zip(frame.index, frame["subject"].tolist())):
        if str(name).strip() == "":
            problems.add(f"{_where(path, row, 'subject')}: empty; give a subject id")
            ok[i] = False
    return ok


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


def _load_observations(path: Path, weights: dict[str, float], problems: _Problems):
    """observations.csv in model units (None if unusable; every problem noted)."""
    frame = _read_csv(path, OBSERVATION_COLUMNS, problems)
    if frame is None:
        return None
    ok = _check_subjects(path, frame, problems) & _check_protocols(path, frame, problems)
    time = _time_in_minutes(path, frame, _number(path, frame, "time", problems), problems)
    raw_values = _number(path, frame, "value", problems)
    sigma = _observation_sigma(path, frame, problems)
    ok &= ~np.isnan(time) & ~np.isnan(raw_values)
    observables, values, sigmas = _in_model_units(
        path, frame, raw_values, sigma, weights, ok, problems
    )
    out = pd.DataFrame(
        dict(
            subject=frame["subject"].str.strip().to_numpy(),
            protocol=frame["protocol"].str.strip().to_numpy(),
            time=time,
            observable=observables,
            value=values,
            sigma=sigmas,
            arm=frame["arm"].str.strip().to_numpy() if "arm" in frame.columns else "",
            row=frame.index.to_numpy(),
        )
    )
    _check_times(path, out[~np.isnan(out["value"])], problems)
    return out


def _observation_sigma(path: Path, frame: pd.DataFrame, problems: _Problems) -> np.ndarray:
    """Each row's standard deviation (file units): `sigma`, else the standard error sd/√n of
    a summary row; NaN: from the error model."""
    sigma = _optional_number(path, frame, "sigma", problems, positive=True)
    if "sd" in frame.columns:
        sd = _number(path, frame, "sd", problems, required=False, positive=True)
        n = _optional_number(path, frame, "n", problems, positive=True)
        for row in frame.index[~np.isnan(sd) & np.isnan(n)]:
            problems.add(
                f"{_where(path, row, 'n')}: a summary row (sd given) needs the number of subjects "
                "n, so that its standard error sd/√n can be used"
            )
        summary = ~np.isnan(sd)
        sigma = np.where(summary & np.isnan(sigma), sd / np.sqrt(np.where(summary, n, 1.0)), sigma)
    return sigma


def _in_model_units(path, frame, raw_values, sigma, weights, ok, problems):
    """(observable names, values, sigmas) of every row, names resolved and in model units;
    NaN values for the rows refused (each refusal noted)."""
    observables, values, sigmas = [], np.full(len(frame), np.nan), np.full(len(frame), np.nan)
    rows = zip(frame.index, frame["observable"].tolist(), frame["unit"].tolist())
    for i, (row, name, unit) in enumerate(rows):
        key = _observable_key(path, row, name, raw_values[i], problems)
        observables.append(key or str(name).strip())
        if key is None or not ok[i]:
            continue
        context = {"body_weight": weights.get(str(frame["subject"].iloc[i]).strip())}
        try:
            with np.errstate(over="ignore"):  # an overflow to inf is refused as implausible
                value = float(to_model_units(key, raw_values[i], str(unit), **context))
                spread = (
                    np.nan
                    if np.isnan(sigma[i])
                    else _sigma_to_model(key, sigma[i], str(unit), context)
                )
        except UnitError as e:
            problems.add(f"{_where(path, row, 'unit')}: {_cut(e)}")
            continue
        implausible = implausible_value(key, raw_values[i], str(unit), value)
        if implausible:
            problems.add(f"{_where(path, row, 'value')}: {implausible}")
            continue
        values[i], sigmas[i] = value, spread
    return observables, values, sigmas


def _cut(error: Exception, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "…"


def _observable_key(path: Path, row: int, name: Any, value: float, problems: _Problems):
    """The observable's name (aliases resolved), or None if unknown or, for a concentration or
    amount, negative (the problem noted)."""
    key = ALIASES.get(str(name).strip(), str(name).strip())
    if key not in KNOWN_OBSERVABLES:
        problems.add(
            f"{_where(path, row, 'observable')}: unknown observable {_show(name)}; use one of "
            f"{', '.join(KNOWN_OBSERVABLES)}"
        )
        return None
    if key in NON_NEGATIVE and value < 0:
        problems.add(
            f"{_where(path, row, 'value')}: {value:g} is negative; a concentration or "
            "amount cannot be negative — check the sign or the unit"
        )
        return None
    return key


def _check_times(path: Path, out: pd.DataFrame, problems: _Problems) -> None:
    """Each subject's series of one observable under one protocol: increasing, from 0."""
    for (subject, protocol, observable), group in out.groupby(
        ["subject", "protocol", "observable"], sort=False
    ):
        t = group["time"].to_numpy()
        if np.any(np.diff(t) < 0):
            k = int(np.argmax(np.diff(t) < 0)) + 1
            problems.add(
                f"{_where(path, int(group['row'].iloc[k]), 'time')}: times out of order for "
                f"subject {_show(subject)}, {protocol}, {observable} ({t[k - 1]:g} then "
                f"{t[k]:g} min); sort each subject's measurements by time"
            )
        if np.any(t < 0):
            k = int(np.argmax(t < 0))
            problems.add(
                f"{_where(path, int(group['row'].iloc[k]), 'time')}: negative time; times count "
                "from the protocol's start (0)"
            )


def _sigma_to_model(observable: str, sigma: float, unit: str, context: dict) -> float:
    """A standard deviation given in `unit`, in model units (affine units: difference of two)."""
    zero = to_model_units(observable, 0.0, unit, **context)
    return float(abs(to_model_units(observable, sigma, unit, **context) - zero))


DOSE_FRAME_COLUMNS = [
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


def _load_doses(path: Path, problems: _Problems):
    """doses.csv (None if unusable; every problem noted)."""
    frame = _read_csv(path, DOSE_COLUMNS, problems)
    if frame is None:
        return None
    _check_subjects(path, frame, problems)
    _check_protocols(path, frame, problems)
    time = _time_in_minutes(
        path, frame, _number(path, frame, "time", problems, non_negative=True), problems
    )
    amount = _number(path, frame, "amount", problems, non_negative=True)
    duration = _optional_number(path, frame, "duration", problems, positive=True)
    every = _optional_number(path, frame, "repeat_every", problems, positive=True)
    count = _optional_number(path, frame, "repeat_count", problems, positive=True)
    salt = frame["salt"].str.strip() if "salt" in frame.columns else pd.Series("", frame.index)
    unit_factor = np.array([TIME_UNITS.get(u.strip(), np.nan) for u in frame["time_unit"]])
    with np.errstate(over="ignore"):  # an overflow to inf is refused below
        every = every * unit_factor
    for i, row in enumerate(frame.index):
        _check_dose(path, frame, i, amount[i], problems)
        _check_repeats(path, row, time[i], every[i], count[i], problems)
        _check_salt(
            path, row, frame["route"].iloc[i], frame["substance"].iloc[i], salt.iloc[i], problems
        )
    out = pd.DataFrame(
        dict(
            subject=frame["subject"].str.strip().to_numpy(),
            protocol=frame["protocol"].str.strip().to_numpy(),
            time=time,
            route=frame["route"].str.strip().to_numpy(),
            substance=frame["substance"].str.strip().to_numpy(),
            amount=amount,
            unit=frame["unit"].str.strip().to_numpy(),
            duration=duration,
            repeat_every=every,
            repeat_count=count,
            salt=salt.to_numpy(),
            row=frame.index.to_numpy(),
        )
    )
    _check_trial_arms(path, out, problems)
    return out


def _check_dose(path: Path, frame: pd.DataFrame, i: int, amount: float, problems) -> None:
    """Dose row `i`: a known route and substance in one of its units, a plausible amount."""
    row = frame.index[i]
    kind = (frame["route"].iloc[i].strip(), frame["substance"].iloc[i].strip())
    unit = frame["unit"].iloc[i].strip()
    if kind not in DOSE_KINDS:
        problems.add(
            f"{_where(path, row, 'route')}: unknown dose {_show(kind[0])} {_show(kind[1])}; use "
            "one of " + ", ".join(f"{r} {s}" for r, s in DOSE_KINDS)
        )
    elif unit not in DOSE_KINDS[kind]:
        problems.add(
            f"{_where(path, row, 'unit')}: unit {_show(unit)} for {kind[0]} {kind[1]}; use one "
            f"of {', '.join(DOSE_KINDS[kind])}"
        )
    elif not np.isnan(amount) and amount > DOSE_LIMITS[kind][unit]:
        fits = [u for u, limit in DOSE_LIMITS[kind].items() if u != unit and amount <= limit]
        hint = f"; did you mean {fits[0]}?" if fits else "; check the value and its unit"
        problems.add(
            f"{_where(path, row, 'amount')}: {amount:g} {unit} {kind[0]} {kind[1]} is above the "
            f"plausible {DOSE_LIMITS[kind][unit]:g} {unit} per dose{hint}"
        )


def _check_repeats(path, row, time: float, every: float, count: float, problems) -> None:
    """repeat_every (min) and repeat_count given together; a whole count; within ten years."""
    if np.isnan(every) != np.isnan(count):
        problems.add(
            f"{_where(path, row, 'repeat_count')}: give both repeat_every and repeat_count, "
            "or neither"
        )
    elif not np.isnan(every) and every > MAX_MINUTES:
        problems.add(
            f"{_where(path, row, 'repeat_every')}: doses repeated less than once in ten years; "
            "check repeat_every and the time_unit"
        )
    elif not np.isnan(count) and (count != int(count) or count > MAX_REPEATS):
        problems.add(
            f"{_where(path, row, 'repeat_count')}: {count:g} is not a whole number of doses "
            f"from 1 to {MAX_REPEATS}; give how many times the dose is given"
        )
    elif not np.isnan(count) and not np.isnan(time) and time + (count - 1) * every > MAX_MINUTES:
        problems.add(
            f"{_where(path, row, 'repeat_every')}: the repeated doses run beyond ten years; "
            "check repeat_every, repeat_count and the time_unit"
        )


def _check_salt(path, row, route: str, substance: str, salt: str, problems) -> None:
    """A salt, where given, is a known oral Mg²⁺ salt."""
    if salt == "":
        return
    if (route.strip(), substance.strip()) != ("oral", "magnesium"):
        problems.add(
            f"{_where(path, row, 'salt')}: a salt is given for {route.strip()} "
            f"{substance.strip()}; only oral magnesium records take a salt"
        )
    elif salt not in SALT_BIOAVAILABILITY:
        problems.add(
            f"{_where(path, row, 'salt')}: unknown Mg salt {_show(salt)}; use one of "
            f"{', '.join(SALT_BIOAVAILABILITY)}"
        )


def _check_trial_arms(path: Path, doses: pd.DataFrame, problems: _Problems) -> None:
    """Each subject's oral Mg²⁺ in an mg_trial: one dose size, one unit and one salt."""
    oral = doses[
        (doses["protocol"] == "mg_trial")
        & (doses["route"] == "oral")
        & (doses["substance"] == "magnesium")
        & ~np.isnan(doses["amount"].to_numpy(dtype=float))
    ]
    for subject, arm in oral.groupby("subject", sort=False):
        for column in ("amount", "unit", "salt"):
            values = arm[column].tolist()
            if any(v != values[0] for v in values):
                k = next(k for k, v in enumerate(values) if v != values[0])
                problems.add(
                    f"{_where(path, int(arm['row'].iloc[k]), column)}: subject {_show(subject)}: "
                    f"its mg_trial arm gives two dose {column}s ({values[0]} and {values[k]}); one "
                    "arm takes one dose size in one unit and one salt — split the arms into "
                    "separate subjects"
                )
                break


def _load_subjects(path: Path, problems: _Problems):
    """subjects.csv (None if unusable; every problem noted)."""
    frame = _read_csv(path, ("subject",), problems)
    if frame is None:
        return None
    _check_subjects(path, frame, problems)
    duplicated = frame["subject"].str.strip().duplicated().to_numpy()
    for row in frame.index[duplicated]:
        problems.add(f"{_where(path, row, 'subject')}: subject listed twice; one row each")
    out = pd.DataFrame(dict(subject=frame["subject"].str.strip().to_numpy()), index=frame.index)
    for column in COVARIATE_RANGES:
        if column in frame.columns:
            out[column] = _covariate(path, frame, column, problems)
    for column in frame.columns:
        if column not in out.columns:
            out[column] = frame[column].str.strip().to_numpy()
    return out


def _covariate(path: Path, frame: pd.DataFrame, column: str, problems: _Problems) -> np.ndarray:
    """A covariate with a unit (`COVARIATE_RANGES`): NaN where blank or refused."""
    lo, hi, unit, others = COVARIATE_RANGES[column]
    values = _number(path, frame, column, problems, required=False, non_negative=True)
    for i, row in enumerate(frame.index):
        v = values[i]
        if np.isnan(v) or lo <= v <= hi:
            continue
        fits = [u for u, factor in others.items() if lo <= v * factor <= hi]
        hint = f"; did you give it in {fits[0]}?" if fits else ""
        problems.add(
            f"{_where(path, row, column)}: {v:g} is outside {lo:g}–{hi:g}; give {column} in "
            f"{unit}{hint}"
        )
        values[i] = np.nan
    return values


def _check_subjects_observed(name: str, rows, subjects: list, observed: set, problems) -> None:
    """Every subject of another table has observations."""
    for row, subject in zip(rows, subjects):
        if subject and subject not in observed:
            problems.add(
                f"{name}, row {row}, column 'subject': subject {_show(subject)} has no "
                "observations; add its measurements to observations.csv or remove the row"
            )


def _check_clamp_insulin(path: Path, observations, doses, problems: _Problems) -> None:
    """Every subject's hyperinsulinemic clamp has its insulin infusion in doses.csv."""
    clamp = observations[observations["protocol"] == "hyperinsulinemic_clamp"]
    infused = doses[
        (doses["protocol"] == "hyperinsulinemic_clamp")
        & (doses["route"] == "iv")
        & (doses["substance"] == "insulin")
    ]
    for subject, rows in clamp.groupby("subject", sort=False):
        if subject not in set(infused["subject"]):
            problems.add(
                f"{_where(path, int(rows['row'].iloc[0]), 'protocol')}: subject "
                f"{_show(subject)}: its hyperinsulinemic_clamp has no insulin infusion; add an "
                "'iv insulin' row (amount in mU/m2/min or mU/kg/min) to doses.csv"
            )


def _check_forced_glucose(directory: Path, observations, doses, problems: _Problems) -> None:
    """Every subject's `forced_glucose` protocol: a glucose series (its input) from time 0,
    one value per time, and secretion or C-peptide measurements to fit; no other observable
    and no doses."""
    path = directory / "observations.csv"
    forced = observations[observations["protocol"] == FORCED_GLUCOSE]
    for subject, rows in forced.groupby("subject", sort=False):
        who = f"subject {_show(subject)}: its {FORCED_GLUCOSE} protocol"
        glucose = rows[rows["observable"] == "glucose"]
        other = rows[~rows["observable"].isin(("glucose", *FORCED_GLUCOSE_OBSERVED))]
        for row, name in zip(other["row"], other["observable"]):
            problems.add(
                f"{_where(path, int(row), 'observable')}: {who} drives the beta-cell with the "
                f"measured glucose and observes only {' or '.join(FORCED_GLUCOSE_OBSERVED)}, not "
                f"{name}; record {name} under a whole-body protocol (ivgtt, ogtt, a clamp)"
            )
        if glucose.empty:
            problems.add(
                f"{_where(path, int(rows['row'].iloc[0]), 'protocol')}: {who} has no glucose "
                "rows; give the measured plasma glucose (the input series) from time 0"
            )
            continue
        times = glucose["time"].to_numpy(dtype=float)
        if times[0] != 0.0:
            problems.add(
                f"{_where(path, int(glucose['row'].iloc[0]), 'time')}: {who}'s glucose series "
                f"(its input) starts at {times[0]:g} min; give glucose at time 0, the "
                "protocol's start"
            )
        repeated = np.flatnonzero(np.diff(times) == 0)
        if len(repeated):
            k = int(repeated[0]) + 1
            problems.add(
                f"{_where(path, int(glucose['row'].iloc[k]), 'time')}: {who} gives glucose "
                f"twice at {times[k]:g} min; the input series takes one value per time — "
                "merge the repeats"
            )
        if not rows["observable"].isin(FORCED_GLUCOSE_OBSERVED).any():
            problems.add(
                f"{_where(path, int(rows['row'].iloc[0]), 'protocol')}: {who} has only glucose "
                f"(its input); add {' or '.join(FORCED_GLUCOSE_OBSERVED)} measurements to fit"
            )
    if doses is None:  # doses.csv unusable: its own problems are listed
        return
    dosed = doses[doses["protocol"] == FORCED_GLUCOSE]
    for row in dosed["row"] if "row" in dosed.columns else []:
        problems.add(
            f"{_where(directory / 'doses.csv', int(row), 'protocol')}: a {FORCED_GLUCOSE} "
            "protocol takes no doses (the measured glucose is its only input); remove the row "
            "or use ivgtt / ogtt for a dosed test"
        )


def load_dataset(directory: str | Path) -> Dataset:
    """Read and validate `observations.csv` (and `doses.csv`, `subjects.csv` if present) from
    `directory`. Raises `DatasetError` listing every problem found (file, row, column, fix)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(
            f"{directory}: not a directory; give the folder holding observations.csv"
        )
    problems = _Problems()
    subjects = pd.DataFrame(dict(subject=[]))
    if (directory / "subjects.csv").exists():
        subjects = _load_subjects(directory / "subjects.csv", problems)
    weights = {}
    if subjects is not None and "weight" in subjects.columns:
        weights = {s: w for s, w in zip(subjects["subject"], subjects["weight"]) if w == w}
    observations = _load_observations(directory / "observations.csv", weights, problems)
    doses = pd.DataFrame(columns=DOSE_FRAME_COLUMNS)
    if (directory / "doses.csv").exists():
        doses = _load_doses(directory / "doses.csv", problems)
    if observations is not None:
        observed = set(observations["subject"])
        if subjects is not None:
            _check_subjects_observed(
                "subjects.csv", subjects.index, subjects["subject"].tolist(), observed, problems
            )
        if doses is not None and len(doses):
            _check_subjects_observed(
                "doses.csv", doses["row"], doses["subject"].tolist(), observed, problems
            )
        if doses is not None:
            _check_clamp_insulin(directory / "observations.csv", observations, doses, problems)
        _check_forced_glucose(directory, observations, doses, problems)
    problems.raise_any()
    return Dataset(
        observations=observations,
        doses=doses.drop(columns="row", errors="ignore"),
        subjects=subjects.reset_index(drop=True),
        source=str(directory),
    )
