"""NONMEM-style datasets: one row per event (ID, TIME, DV, MDV, EVID, AMT, RATE, CMT, and
covariate columns), read and validated like the native format — every problem found in one
pass, each naming the file, the row (header = row 1), the column and the fix.

Conventions (NONMEM's): EVID 0 is an observation (of compartment CMT, value DV; MDV 1 marks
it missing), EVID 1 a dose (AMT into compartment CMT; MDV must then be 1), EVID 2 an other
event (ignored); "." is an empty cell. Column names are case-insensitive. Not supported
(refused by name): resets (EVID 3, 4), infusions (RATE ≠ 0), additional doses (ADDL/II).
Covariates are the other numeric columns; a subject's covariate is its first row's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._dataset import DatasetError, _number, _Problems, _read_csv, _show

REQUIRED = ("ID", "TIME", "DV", "EVID", "AMT", "CMT")
OPTIONAL = ("MDV", "RATE", "ADDL", "II", "SS")
#: default mapping of observation compartments to observables (ADVAN2: 2 = central)
DEFAULT_OBSERVABLES = {2: "concentration"}
#: default dose compartments (ADVAN2: 1 = depot, oral doses)
DEFAULT_DOSE_COMPARTMENTS = (1,)


@dataclass(frozen=True)
class NonmemData:
    """A NONMEM-style dataset split into the tables the engines use."""

    observations: pd.DataFrame  # subject, time, observable, value, row
    doses: pd.DataFrame  # subject, time, amount, compartment, row
    covariates: pd.DataFrame  # index subject; one column per covariate
    source: Path

    @property
    def subjects(self) -> list[str]:
        return list(self.covariates.index)


def read_nonmem(
    path: str | Path,
    *,
    observables: Mapping[int, str] | None = None,
    dose_compartments: tuple[int, ...] = DEFAULT_DOSE_COMPARTMENTS,
) -> NonmemData:
    """Read and validate a NONMEM-style CSV. `observables` maps each observation CMT to an
    observable name (default {2: "concentration"}); `dose_compartments` are the CMTs doses
    may go into (default (1,): the depot). Raises `DatasetError` listing every problem."""
    path = Path(path)
    observables = dict(DEFAULT_OBSERVABLES if observables is None else observables)
    problems = _Problems()
    frame = _read_csv(path, (), problems)
    if frame is None:
        problems.raise_any()
        raise DatasetError(f"{path.name}: unreadable")  # pragma: no cover - raise_any raised
    frame.columns = [str(c).strip().upper() for c in frame.columns]
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path.name}: missing column(s) {', '.join(missing)}; a NONMEM-style dataset "
            f"needs {', '.join(REQUIRED)} (MDV and RATE optional; see docs/population.md)"
        )
    frame = frame.replace(".", "")
    for column in ("ADDL", "II", "SS"):
        if column in frame.columns and (frame[column].str.strip().replace("0", "") != "").any():
            row = frame.index[(frame[column].str.strip().replace("0", "") != "").argmax()]
            problems.add(
                f"{path.name}, row {row}, column {column!r}: additional or steady-state doses "
                "are not supported; write each dose as its own EVID 1 row"
            )
    ids = frame["ID"].str.strip()
    for row in frame.index[ids == ""]:
        problems.add(f"{path.name}, row {row}, column 'ID': empty; give every row its subject")
    time = _number(path, frame, "TIME", problems, non_negative=True)
    evid = _number(path, frame, "EVID", problems)
    cmt = _number(path, frame, "CMT", problems, required=False)
    amt = _number(path, frame, "AMT", problems, required=False)
    dv = _number(path, frame, "DV", problems, required=False)
    mdv = (
        _number(path, frame, "MDV", problems, required=False)
        if "MDV" in frame.columns
        else np.where(evid == 0, 0.0, 1.0)
    )
    rate = (
        _number(path, frame, "RATE", problems, required=False)
        if "RATE" in frame.columns
        else np.zeros(len(frame))
    )
    rows = np.asarray(frame.index)
    _check_events(
        path, rows, evid, mdv, amt, dv, cmt, rate, observables, dose_compartments, problems
    )
    _check_time_order(path, rows, ids.to_numpy(), time, problems)
    covariate_columns = [c for c in frame.columns if c not in REQUIRED + OPTIONAL]
    covariates = _covariates(path, frame, ids, covariate_columns, problems)
    problems.raise_any()

    is_obs = (evid == 0) & (mdv == 0)
    is_dose = evid == 1
    observations = pd.DataFrame(
        dict(
            subject=ids.to_numpy()[is_obs],
            time=time[is_obs],
            observable=[observables[int(c)] for c in cmt[is_obs]],
            value=dv[is_obs],
            row=rows[is_obs],
        )
    )
    doses = pd.DataFrame(
        dict(
            subject=ids.to_numpy()[is_dose],
            time=time[is_dose],
            amount=amt[is_dose],
            compartment=cmt[is_dose].astype(int),
            row=rows[is_dose],
        )
    )
    without = sorted(set(covariates.index) - set(observations["subject"]))
    if without:
        raise DatasetError(
            f"{path.name}: subject(s) {', '.join(map(_show, without[:5]))} have no observation "
            "(EVID 0, MDV 0); remove them or add their observations"
        )
    return NonmemData(observations=observations, doses=doses, covariates=covariates, source=path)


def _check_events(path, rows, evid, mdv, amt, dv, cmt, rate, observables, dose_cmts, problems):
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
            if mdv[k] == 0.0:
                problems.add(
                    f"{path.name}, row {row}, column 'MDV': 0 on a dose (EVID 1); a dose row "
                    "has no observation — set MDV to 1"
                )
            if not amt[k] > 0:
                problems.add(
                    f"{path.name}, row {row}, column 'AMT': a dose (EVID 1) needs a positive "
                    f"amount, not {'nothing' if np.isnan(amt[k]) else f'{amt[k]:g}'}"
                )
            if not np.isnan(rate[k]) and rate[k] != 0.0:
                problems.add(
                    f"{path.name}, row {row}, column 'RATE': infusions (RATE ≠ 0) are not "
                    "supported for the oral model; give RATE 0 or leave it empty"
                )
            if not np.isnan(cmt[k]) and int(cmt[k]) not in dose_cmts:
                problems.add(
                    f"{path.name}, row {row}, column 'CMT': a dose into compartment "
                    f"{cmt[k]:g}; doses go into {', '.join(map(str, dose_cmts))} (the depot)"
                )
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
            if np.isnan(cmt[k]) or int(cmt[k]) not in observables:
                shown = "nothing" if np.isnan(cmt[k]) else f"{cmt[k]:g}"
                known = ", ".join(f"{c} ({n})" for c, n in observables.items())
                problems.add(
                    f"{path.name}, row {row}, column 'CMT': {shown} is not an observed "
                    f"compartment; use {known} or map it in `population.observables`"
                )
        if e in (0.0, 1.0) and not np.isnan(mdv[k]) and mdv[k] not in (0.0, 1.0):
            problems.add(f"{path.name}, row {row}, column 'MDV': {mdv[k]:g}; use 0 or 1")


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


def _covariates(path, frame, ids, columns, problems) -> pd.DataFrame:
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
