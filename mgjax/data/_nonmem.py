"""NONMEM-style datasets: one row per event (ID, TIME, DV, MDV, EVID, AMT, RATE, CMT, ADDL,
II, SS and covariate columns), read and validated like the native format — every problem found
in one pass, each naming the file, the row (header = row 1), the column and the fix — and
converted to the native dataset (`convert_nonmem`, `mgjax convert`).

Conventions (NONMEM's): EVID 0 is an observation (of compartment CMT, value DV; MDV 1 marks
it missing), EVID 1 a dose (AMT into compartment CMT; MDV must then be 1), EVID 2 an other
event (ignored); "." is an empty cell. Column names are case-insensitive. ADDL > 0 on a dose
adds ADDL further doses every II (TIME's unit) after it; empty or zero ADDL, II and SS cells
are no additional dose. Not supported (refused by name): resets (EVID 3, 4), steady state
(SS ≠ 0), modelled rates (RATE −1, −2), and infusions (RATE > 0) unless `infusions=True`.
Covariates are the other columns; a subject's covariate is its first row's value.
"""

from __future__ import annotations

import difflib
import math
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..protocols import SALT_BIOAVAILABILITY
from ._dataset import (
    ALIASES,
    DOSE_KINDS,
    KNOWN_OBSERVABLES,
    MAX_REPEATS,
    PROTOCOLS,
    TIME_UNITS,
    Dataset,
    DatasetError,
    _number,
    _Problems,
    _read_csv,
    _show,
    load_dataset,
)
from ._units import UNITS, _normalise

REQUIRED = ("ID", "TIME", "DV", "EVID", "AMT", "CMT")
OPTIONAL = ("MDV", "RATE", "ADDL", "II", "SS")
#: default mapping of observation compartments to observables (ADVAN2: 2 = central)
DEFAULT_OBSERVABLES = {2: "concentration"}
#: default dose compartments (ADVAN2: 1 = depot, oral doses)
DEFAULT_DOSE_COMPARTMENTS = (1,)


@dataclass(frozen=True)
class NonmemData:
    """A NONMEM-style dataset split into the tables the engines use. `doses` holds every
    dose, those added by ADDL included (`additional` True; `addl`, `ii` are the record's own,
    0 on the added ones); `row` is each event's row in the file (header = row 1)."""

    observations: pd.DataFrame  # subject, time, observable, value, compartment, row
    doses: pd.DataFrame  # subject, time, amount, compartment, rate, addl, ii, additional, row
    covariates: pd.DataFrame  # index subject; one column per covariate
    source: Path
    #: each subject's first row (whose covariates it has)
    first_rows: Mapping[str, int] = field(default_factory=dict)

    @property
    def subjects(self) -> list[str]:
        return list(self.covariates.index)


def read_nonmem(
    path: str | Path,
    *,
    observables: Mapping[int, str] | None = None,
    dose_compartments: tuple[int, ...] = DEFAULT_DOSE_COMPARTMENTS,
    infusions: bool = False,
    keep: tuple[str, ...] = (),
    observables_key: str = "population.observables",
    doses_key: str = "population.dose_compartments",
) -> NonmemData:
    """Read and validate a NONMEM-style CSV. `observables` maps each observation CMT to an
    observable name (default {2: "concentration"}); `dose_compartments` are the CMTs doses
    may go into (default (1,): the depot); `infusions` accepts RATE > 0 (an infusion of AMT at
    RATE per TIME unit); `keep` names text columns carried into the observation and dose
    tables (not covariates); the `*_key`s are the config keys messages point to. ADDL doses
    are expanded into `doses`. Raises `DatasetError` listing every problem."""
    path = Path(path)
    observables = dict(DEFAULT_OBSERVABLES if observables is None else observables)
    problems = _Problems()
    frame = _read_csv(path, (), problems)
    if frame is None:
        problems.raise_any()
        raise DatasetError(f"{path.name}: unreadable")  # pragma: no cover - raise_any raised
    frame.columns = [str(c).strip().upper() for c in frame.columns]
    keep = tuple(c.strip().upper() for c in keep)
    missing = [c for c in REQUIRED + keep if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path.name}: missing column(s) {', '.join(missing)}; a NONMEM-style dataset "
            f"needs {', '.join(REQUIRED)} (MDV, RATE, ADDL, II optional"
            + (f"; {', '.join(keep)} named in the config" if keep else "")
            + "; see docs/population.md)"
        )
    frame = frame.replace(".", "")
    ids = frame["ID"].str.strip()
    for row in frame.index[ids == ""]:
        problems.add(f"{path.name}, row {row}, column 'ID': empty; give every row its subject")
    time = _number(path, frame, "TIME", problems, non_negative=True)
    evid = _number(path, frame, "EVID", problems)
    cols = dict(
        evid=evid,
        cmt=_number(path, frame, "CMT", problems, required=False),
        amt=_number(path, frame, "AMT", problems, required=False),
        dv=_number(path, frame, "DV", problems, required=False),
        mdv=(
            _number(path, frame, "MDV", problems, required=False)
            if "MDV" in frame.columns
            else np.where(evid == 0, 0.0, 1.0)
        ),
        rate=np.nan_to_num(_optional(path, frame, "RATE", problems)),
        addl=_optional(path, frame, "ADDL", problems),
        ii=_optional(path, frame, "II", problems),
        ss=_optional(path, frame, "SS", problems),
    )
    rows = np.asarray(frame.index)
    where = dict(
        observables=observables,
        dose_cmts=dose_compartments,
        infusions=infusions,
        observables_key=observables_key,
        doses_key=doses_key,
    )
    _check_events(path, rows, cols, where, problems)
    _check_additional(path, rows, cols, problems)
    _check_time_order(path, rows, ids.to_numpy(), time, problems)
    covariate_columns = [c for c in frame.columns if c not in REQUIRED + OPTIONAL + keep]
    covariates = _covariates(frame, ids, covariate_columns)
    problems.raise_any()

    evid, cmt = cols["evid"], cols["cmt"]
    is_obs = (evid == 0) & (cols["mdv"] == 0)
    is_dose = evid == 1
    kept = {c.lower(): frame[c].str.strip().to_numpy() for c in keep}
    observations = pd.DataFrame(
        dict(
            subject=ids.to_numpy()[is_obs],
            time=time[is_obs],
            observable=[observables[int(c)] for c in cmt[is_obs]],
            value=cols["dv"][is_obs],
            compartment=cmt[is_obs].astype(int),
            row=rows[is_obs],
            **{name: values[is_obs] for name, values in kept.items()},
        )
    )
    addl = np.nan_to_num(cols["addl"][is_dose]).astype(int)
    doses = pd.DataFrame(
        dict(
            subject=ids.to_numpy()[is_dose],
            time=time[is_dose],
            amount=cols["amt"][is_dose],
            compartment=cmt[is_dose].astype(int),
            rate=cols["rate"][is_dose],
            addl=addl,
            ii=np.where(addl > 0, cols["ii"][is_dose], 0.0),
            additional=np.zeros(int(is_dose.sum()), bool),
            row=rows[is_dose],
            **{name: values[is_dose] for name, values in kept.items()},
        )
    )
    without = sorted(set(covariates.index) - set(observations["subject"]))
    if without:
        raise DatasetError(
            f"{path.name}: subject(s) {', '.join(map(_show, without[:5]))} have no observation "
            "(EVID 0, MDV 0); remove them or add their observations"
        )
    first = ~ids.duplicated().to_numpy()
    return NonmemData(
        observations=observations,
        doses=_expand_additional(doses, list(covariates.index)),
        covariates=covariates,
        source=path,
        first_rows=dict(zip(ids.to_numpy()[first], (int(r) for r in rows[first]))),
    )


def _optional(path, frame, column, problems) -> np.ndarray:
    """An optional numeric column: NaN where empty, or everywhere when the column is absent."""
    if column in frame.columns:
        return _number(path, frame, column, problems, required=False)
    return np.full(len(frame), np.nan)


def _check_events(path, rows, cols, where, problems):
    evid, mdv, amt, dv, cmt = cols["evid"], cols["mdv"], cols["amt"], cols["dv"], cols["cmt"]
    for k, row in enumerate(rows):
        e = evid[k]
        if np.isnan(e):
            continue  # already reported
        if e in (3.0, 4.0):
            problems.add(
                f"{path.name}, row {row}, column 'EVID': {int(e)} (a reset) is not supported; "
                "split the subject into separate IDs at the reset"
            )
        elif e not in (0.0, 1.0, 2.0):
            problems.add(
                f"{path.name}, row {row}, column 'EVID': {e:g} is not an event id; use 0 "
                "(observation), 1 (dose) or 2 (other)"
            )
        elif e == 1.0:
            _check_dose(path, row, mdv[k], amt[k], cols["rate"][k], cmt[k], where, problems)
        elif e == 0.0 and mdv[k] == 0.0:
            if np.isnan(dv[k]):
                problems.add(
                    f"{path.name}, row {row}, column 'DV': an observation (EVID 0, MDV 0) "
                    "without a value; give DV, or set MDV to 1 if it is missing"
                )
            if not np.isnan(amt[k]) and amt[k] != 0.0:
                problems.add(
                    f"{path.name}, row {row}, column 'AMT': {amt[k]:g} on an observation "
                    "(EVID 0); an amount belongs to a dose row (EVID 1)"
                )
            if np.isnan(cmt[k]) or int(cmt[k]) not in where["observables"]:
                shown = "nothing" if np.isnan(cmt[k]) else f"{cmt[k]:g}"
                known = ", ".join(f"{c} ({n})" for c, n in where["observables"].items())
                problems.add(
                    f"{path.name}, row {row}, column 'CMT': {shown} is not an observed "
                    f"compartment; use {known or 'one'} or map it in "
                    f"`{where['observables_key']}`"
                )
        if e in (0.0, 1.0) and not np.isnan(mdv[k]) and mdv[k] not in (0.0, 1.0):
            problems.add(f"{path.name}, row {row}, column 'MDV': {mdv[k]:g}; use 0 or 1")


def _check_dose(path, row, mdv, amt, rate, cmt, where, problems):
    """One dose row (EVID 1): MDV 1, a positive AMT, a supported RATE, a dose compartment."""
    if mdv == 0.0:
        problems.add(
            f"{path.name}, row {row}, column 'MDV': 0 on a dose (EVID 1); a dose row "
            "has no observation — set MDV to 1"
        )
    if not amt > 0:
        problems.add(
            f"{path.name}, row {row}, column 'AMT': a dose (EVID 1) needs a positive "
            f"amount, not {'nothing' if np.isnan(amt) else f'{amt:g}'}"
        )
    if rate < 0:
        problems.add(
            f"{path.name}, row {row}, column 'RATE': {rate:g} (a modelled rate or duration) "
            "is not supported; give the infusion's rate (AMT per TIME unit), or 0 for a bolus"
        )
    elif rate != 0.0 and not where["infusions"]:
        problems.add(
            f"{path.name}, row {row}, column 'RATE': infusions (RATE ≠ 0) are not "
            "supported for the oral model; give RATE 0 or leave it empty"
        )
    if not np.isnan(cmt) and int(cmt) not in where["dose_cmts"]:
        into = ", ".join(map(str, where["dose_cmts"])) or "none"
        problems.add(
            f"{path.name}, row {row}, column 'CMT': a dose into compartment {cmt:g}; doses go "
            f"into {into}"
            + (" (the depot)" if tuple(where["dose_cmts"]) == (1,) else "")
            + f" — map others in `{where['doses_key']}`"
        )


def _check_additional(path, rows, cols, problems):
    """ADDL, II and SS: no steady state; ADDL a whole number on a dose, with II > 0."""
    evid, addl, ii, ss = cols["evid"], cols["addl"], cols["ii"], cols["ss"]
    for k, row in enumerate(rows):
        if not np.isnan(ss[k]) and ss[k] != 0.0:
            problems.add(
                f"{path.name}, row {row}, column 'SS': {ss[k]:g} — steady-state dosing is not "
                "supported; give the doses before it instead (e.g. ADDL doses every II), "
                "or SS 0"
            )
        if not np.isnan(ii[k]) and ii[k] < 0:
            problems.add(
                f"{path.name}, row {row}, column 'II': {ii[k]:g} is negative; the interval "
                "between doses is > 0 (in TIME's unit)"
            )
        a = addl[k]
        if np.isnan(a) or a == 0.0 or np.isnan(evid[k]):
            continue
        if evid[k] != 1.0:
            problems.add(
                f"{path.name}, row {row}, column 'ADDL': {a:g} additional doses on a row that "
                f"is not a dose (EVID {evid[k]:g}); ADDL belongs to a dose row (EVID 1)"
            )
        elif a < 0 or a != math.floor(a):
            problems.add(
                f"{path.name}, row {row}, column 'ADDL': {a:g} is not a whole number of "
                "additional doses; give how many doses follow this one, every II (0: none)"
            )
        elif a >= MAX_REPEATS:
            problems.add(
                f"{path.name}, row {row}, column 'ADDL': {a:g} additional doses are more than "
                f"{MAX_REPEATS - 1} (daily for 100 years); check the value"
            )
        elif np.isnan(ii[k]) or ii[k] == 0.0:  # a negative II is reported above
            shown = "nothing" if np.isnan(ii[k]) else f"{ii[k]:g}"
            problems.add(
                f"{path.name}, row {row}, column 'II': additional doses (ADDL {a:g}) need "
                f"the interval between them, II > 0 in TIME's unit, not {shown}"
            )


def _expand_additional(doses: pd.DataFrame, subjects: list[str]) -> pd.DataFrame:
    """`doses` with each record's ADDL further doses at TIME + k·II (k = 1 … ADDL), sorted by
    subject (in file order) and time; the added ones marked `additional`."""
    repeated = doses[doses["addl"] > 0]
    if repeated.empty:
        return doses
    copies = repeated.loc[repeated.index.repeat(repeated["addl"].to_numpy())].copy()
    k = copies.groupby(level=0).cumcount().to_numpy() + 1
    copies["time"] = copies["time"].to_numpy() + k * copies["ii"].to_numpy()
    copies["addl"], copies["ii"], copies["additional"] = 0, 0.0, True
    out = pd.concat([doses, copies], ignore_index=True)
    order = {s: i for i, s in enumerate(subjects)}
    out["_subject"] = out["subject"].map(order)
    out = out.sort_values(["_subject", "time"], kind="stable")
    return out.drop(columns="_subject").reset_index(drop=True)


def _check_time_order(path, rows, ids, time, problems):
    last: dict[str, tuple[float, int]] = {}
    seen_done: set[str] = set()
    previous = None
    for k, row in enumerate(rows):
        subject = ids[k]
        if subject != previous and subject in last:
            seen_done.add(subject)
        previous = subject
        if subject in seen_done:
            problems.add(
                f"{path.name}, row {row}, column 'ID': subject {_show(subject)} appears again "
                "after other subjects; keep each subject's rows together"
            )
            seen_done.discard(subject)
            last.pop(subject, None)
            continue
        if np.isnan(time[k]):
            continue
        if subject in last and time[k] < last[subject][0]:
            problems.add(
                f"{path.name}, row {row}, column 'TIME': {time[k]:g} is before the subject's "
                f"previous row ({last[subject][0]:g}, row {last[subject][1]}); sort each "
                "subject's rows by time"
            )
        last[subject] = (time[k], row)


def _covariates(frame, ids, columns) -> pd.DataFrame:
    first = ~ids.duplicated().to_numpy()
    table = pd.DataFrame(index=pd.Index(ids.to_numpy()[first], name="subject"))
    for column in columns:
        values = frame[column].str.strip()
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() or (values == "").all():
            table[column.lower()] = numeric.to_numpy()[first]
        else:
            table[column.lower()] = values.to_numpy()[first]  # categorical (text)
    return table


# --- NONMEM → the native dataset ------------------------------------------------------------


def observation_target(observable: str, unit: str) -> str:
    """The native observable (aliases resolved) that an observation compartment's DV measures
    in `unit`; a `ValueError` naming the known observables or the observable's units."""
    name = ALIASES.get(observable.strip(), observable.strip())
    if name not in KNOWN_OBSERVABLES:
        close = difflib.get_close_matches(name, KNOWN_OBSERVABLES, n=2) if len(name) < 100 else []
        raise ValueError(
            f"unknown observable {_show(observable)}; "
            + (f"did you mean {' or '.join(close)}? " if close else "")
            + f"use one of {', '.join(KNOWN_OBSERVABLES)}"
        )
    if _normalise(unit) not in {_normalise(u) for u in UNITS[name]}:
        raise ValueError(
            f"unit {_show(unit)} for {name}; use one of {', '.join(UNITS[name])} (docs/data.md)"
        )
    return name


def dose_target(route: str, substance: str, unit: str, salt: str | None = None) -> None:
    """Check that a dose compartment's (route, substance) is a native dose kind given in one of
    its units (and a salt only for oral magnesium); a `ValueError` naming what to use."""
    kind = (route.strip(), substance.strip())
    if kind not in DOSE_KINDS:
        raise ValueError(
            f"unknown dose {_show(route)} {_show(substance)}; use one of "
            + ", ".join(f"{r} {s}" for r, s in DOSE_KINDS)
        )
    if unit.strip() not in DOSE_KINDS[kind]:
        raise ValueError(
            f"unit {_show(unit)} for {kind[0]} {kind[1]}; use one of {', '.join(DOSE_KINDS[kind])}"
        )
    if salt is not None and kind != ("oral", "magnesium"):
        raise ValueError(f"a salt for {kind[0]} {kind[1]}; only oral magnesium takes a salt")
    if salt is not None and salt not in SALT_BIOAVAILABILITY:
        raise ValueError(
            f"unknown Mg salt {_show(salt)}; use one of {', '.join(SALT_BIOAVAILABILITY)}"
        )


def _is_rate(unit: str) -> bool:
    """Whether a dose unit is a rate (mU/m2/min, mg/kg/min): an infusion's amount per min."""
    return unit.strip().endswith("/min")


def convert_nonmem(
    path: str | Path,
    out: str | Path,
    *,
    observations: Mapping[int, Mapping[str, Any]],
    doses: Mapping[int, Mapping[str, Any]] | None = None,
    protocol: str | None = None,
    protocol_column: str | None = None,
    time_unit: str = "h",
    covariates: Mapping[str, str] | None = None,
) -> Dataset:
    """Convert the NONMEM-style CSV `path` into the native dataset (docs/data.md) in folder
    `out`: observations.csv, doses.csv (if any dose) and subjects.csv (if any covariate).

    `observations`: CMT → {observable, unit} (DV's unit); `doses`: CMT → {route, substance,
    unit, salt (optional)} (AMT's unit); `protocol`: the native protocol of every row, or
    `protocol_column`: a column naming each row's; `time_unit`: TIME's (and II's) unit;
    `covariates`: covariate column → subjects.csv column (e.g. WT → weight; the others keep
    their lower-cased names). An infusion (RATE > 0, AMT per TIME unit) lasts AMT/RATE; for a
    rate unit (…/min) AMT is the total and the native amount is the rate per min. ADDL doses
    every II become repeat_count = ADDL + 1, repeat_every = II.

    The result is validated by `load_dataset` before anything is written; every problem
    names the NONMEM file's row and column (`DatasetError`). Returns the loaded dataset."""
    path, out = Path(path), Path(out)
    doses, covariates = dict(doses or {}), dict(covariates or {})
    resolved = _check_mapping(path, observations, doses, protocol, protocol_column, time_unit)
    data = read_nonmem(
        path,
        observables=resolved,
        dose_compartments=tuple(doses),
        infusions=True,
        keep=(protocol_column,) if protocol_column else (),
        observables_key="convert.observations",
        doses_key="convert.doses",
    )
    renamed = _covariate_names(path, data, covariates)
    where = protocol_column.strip().upper() if protocol_column else None
    tables = dict(
        observations=_native_observations(data, observations, protocol, where, time_unit),
        doses=_native_doses(path, data, doses, protocol, where, time_unit),
        subjects=_native_subjects(data, renamed),
    )
    origins = _origins(data, tables, covariates, where)
    with tempfile.TemporaryDirectory(prefix="mgjax-convert-") as scratch:
        written = _write_tables(Path(scratch), tables)
        try:
            dataset = load_dataset(scratch)
        except DatasetError as e:
            raise DatasetError(
                problems=tuple(_in_source_terms(p, path, origins) for p in e.problems),
                more=e.more,
            ) from None
        out.mkdir(parents=True, exist_ok=True)
        for name in written:
            shutil.copyfile(Path(scratch) / name, out / name)
    dataset.source = str(out)
    return dataset


def _check_mapping(path, observations, doses, protocol, protocol_column, time_unit):
    """{CMT: native observable}; a `DatasetError` for a mapping that cannot be used."""
    problems = []
    if (protocol is None) == (protocol_column is None):
        problems.append(
            "give the native protocol as convert.protocol (one for every row: "
            f"{', '.join(PROTOCOLS)}) or convert.protocol_column (a column naming each "
            "row's), not both or neither"
        )
    elif protocol is not None and protocol not in PROTOCOLS:
        problems.append(
            f"convert.protocol: unknown protocol {_show(protocol)}; use one of "
            f"{', '.join(PROTOCOLS)}"
        )
    if time_unit.strip() not in TIME_UNITS:
        problems.append(
            f"convert.time_unit: unknown time unit {_show(time_unit)}; use one of "
            f"{', '.join(sorted(TIME_UNITS))}"
        )
    if not observations:
        problems.append(
            "convert.observations maps no compartment; map each observation CMT to its "
            "observable and DV's unit, e.g. {2: {observable: serum_mg, unit: mmol/L}}"
        )
    resolved = {}
    for cmt, target in observations.items():
        try:
            resolved[int(cmt)] = observation_target(target["observable"], target["unit"])
        except (KeyError, ValueError) as e:
            problems.append(f"convert.observations.{cmt}: {_reason(e)}")
    for cmt, target in doses.items():
        try:
            dose_target(target["route"], target["substance"], target["unit"], target.get("salt"))
        except (KeyError, ValueError) as e:
            problems.append(f"convert.doses.{cmt}: {_reason(e)}")
    if problems:
        raise DatasetError(problems=tuple(f"{path.name}: {p}" for p in problems))
    return resolved


def _reason(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"needs {error.args[0]!r}"
    return str(error)


def _covariate_names(path: Path, data: NonmemData, covariates: Mapping[str, str]) -> dict:
    """{covariate (lower-cased file column): subjects.csv column}."""
    columns = list(data.covariates.columns)
    renamed = {c: c for c in columns}
    for source, target in covariates.items():
        key = source.strip().lower()
        if key not in renamed:
            known = ", ".join(c.upper() for c in columns) or "none"
            raise DatasetError(
                f"{path.name}: convert.covariates names {_show(source)}, not a covariate "
                f"column of the file (its covariate columns: {known})"
            )
        renamed[key] = target.strip()
    targets = [t for t in renamed.values()]
    twice = sorted({t for t in targets if targets.count(t) > 1} | ({"subject"} & set(targets)))
    if twice:
        raise DatasetError(
            f"{path.name}: convert.covariates: subjects.csv would get column {_show(twice[0])} "
            "twice (or the reserved 'subject'); rename one of them"
        )
    return renamed


def _protocols(frame: pd.DataFrame, protocol: str | None, column: str | None):
    return frame[column.lower()].to_numpy() if column else protocol


def _native_observations(data, mapping, protocol, column, time_unit) -> pd.DataFrame:
    obs = data.observations
    units = {int(c): str(t["unit"]).strip() for c, t in mapping.items()}
    return pd.DataFrame(
        dict(
            subject=obs["subject"].to_numpy(),
            protocol=_protocols(obs, protocol, column),
            time=obs["time"].to_numpy(),
            time_unit=time_unit.strip(),
            observable=obs["observable"].to_numpy(),
            value=obs["value"].to_numpy(),
            unit=[units[c] for c in obs["compartment"]],
        )
    )


def _native_doses(path, data, mapping, protocol, column, time_unit) -> pd.DataFrame:
    """The dose records (ADDL as repeats); rates per min for rate units, durations in min."""
    doses = data.doses[~data.doses["additional"].to_numpy(bool)]
    minutes = TIME_UNITS[time_unit.strip()]
    targets = [mapping[int(c)] for c in doses["compartment"]]
    units = [str(t["unit"]).strip() for t in targets]
    amount, rate = doses["amount"].to_numpy(float), doses["rate"].to_numpy(float)
    is_rate = np.array([_is_rate(u) for u in units], bool)
    bolus = [(r, u) for r, u, k, x in zip(doses["row"], units, is_rate, rate) if k and x <= 0]
    if bolus:
        raise DatasetError(
            problems=tuple(
                f"{path.name}, row {r}, column 'RATE': a dose in {u} is an infusion; give RATE "
                f"> 0 (per TIME unit) and AMT = RATE × duration, or map the CMT to an amount unit"
                for r, u in bolus
            )
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        duration = np.where(rate > 0, amount / rate * minutes, np.nan)
        native_amount = np.where(is_rate, rate / minutes, amount)
    addl = doses["addl"].to_numpy(int)
    table = pd.DataFrame(
        dict(
            subject=doses["subject"].to_numpy(),
            protocol=_protocols(doses, protocol, column),
            time=doses["time"].to_numpy(),
            time_unit=time_unit.strip(),
            route=[str(t["route"]).strip() for t in targets],
            substance=[str(t["substance"]).strip() for t in targets],
            amount=native_amount,
            unit=units,
            duration=duration,
            repeat_every=np.where(addl > 0, doses["ii"].to_numpy(float), np.nan),
            repeat_count=pd.array(np.where(addl > 0, addl + 1, 0), dtype="Int64"),
        )
    )
    table.loc[addl == 0, "repeat_count"] = pd.NA
    if any(t.get("salt") for t in mapping.values()):
        table["salt"] = [t.get("salt") or "" for t in targets]
    return table


def _native_subjects(data: NonmemData, renamed: Mapping[str, str]) -> pd.DataFrame:
    table = pd.DataFrame(dict(subject=list(data.covariates.index)))
    for column, target in renamed.items():
        table[target] = [_cell(v) for v in data.covariates[column].to_numpy()]
    return table


def _cell(value: Any) -> str:
    """A covariate as subjects.csv text: whole numbers without '.0', empty for NaN."""
    if isinstance(value, str):
        return value
    value = float(value)
    if math.isnan(value):
        return ""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _write_tables(folder: Path, tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """Write the non-empty native tables (subjects.csv only with a covariate); their names."""
    written = []
    for name, table in tables.items():
        if table.empty or (name == "subjects" and len(table.columns) == 1):
            continue
        table.to_csv(folder / f"{name}.csv", index=False)
        written.append(f"{name}.csv")
    return written


def _origins(data, tables, covariates, protocol_column) -> dict:
    """Per native file: (the NONMEM row of each of its rows, {native column: where in the
    NONMEM file or config it came from})."""
    by_cmt = "column 'CMT' (mapped in convert.{})"
    protocol = f"column {_show(protocol_column)}" if protocol_column else "convert.protocol"
    shared = dict(subject="column 'ID'", protocol=protocol, time="column 'TIME'")
    shared["time_unit"] = "convert.time_unit"
    doses = data.doses[~data.doses["additional"].to_numpy(bool)]
    back = {v.strip(): k.strip().upper() for k, v in covariates.items()}
    subject_columns = {
        c: f"column {_show(back.get(c, c.upper()))}" for c in tables["subjects"].columns
    }
    return {
        "observations.csv": (
            data.observations["row"].tolist(),
            shared
            | dict(value="column 'DV'")
            | dict.fromkeys(("observable", "unit"), by_cmt.format("observations")),
        ),
        "doses.csv": (
            doses["row"].tolist(),
            shared
            | dict(
                amount="column 'AMT'",
                duration="column 'RATE'",
                repeat_count="column 'ADDL'",
                repeat_every="column 'II'",
            )
            | dict.fromkeys(("route", "substance", "unit", "salt"), by_cmt.format("doses")),
        ),
        "subjects.csv": (
            [data.first_rows[s] for s in data.covariates.index],
            subject_columns | dict(subject="column 'ID'"),
        ),
    }


_NATIVE_WHERE = re.compile(r"^(\w+\.csv), row (\d+), column '((?:[^'\\]|\\.)*)': (.*)$", re.S)


def _in_source_terms(problem: str, path: Path, origins: Mapping[str, Any]) -> str:
    """A native loader's problem ('doses.csv, row 3, column 'amount': …') restated at the
    NONMEM file's row and column ('pk.csv, row 7, column 'AMT': …')."""
    match = _NATIVE_WHERE.match(problem)
    if match is None or match.group(1) not in origins:
        return f"{path.name} (converted): {problem}"
    name, row, column, text = match.groups()
    rows, columns = origins[name]
    k = int(row) - 2  # the header is row 1
    if not 0 <= k < len(rows):
        return f"{path.name} (converted): {problem}"
    where = columns.get(column, f"native {name} column {_show(column)}")
    return f"{path.name}, row {rows[k]}, {where}: {text}"
