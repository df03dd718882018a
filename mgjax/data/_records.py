"""Dataset dose records → protocol objects (the data boundary for protocols).

Each protocol name of the dataset maps to a protocol class; its dose records set the protocol's
magnitudes, and its observations the sampling (and, for a clamp, the glucose target when the
GIR was not recorded).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..model import MgT2DModel
from ..protocols import (
    IVGTT,
    OGTT,
    SALT_BIOAVAILABILITY,
    AbstractProtocol,
    HyperglycemicClamp,
    HyperinsulinemicClamp,
    OralMagnesiumTrial,
    PiecewiseConstant,
    fasting,
)
from ..protocols._trial import MG_PER_MMOL_MAGNESIUM
from ._dataset import FORCED_GLUCOSE, DatasetError

MINUTES_PER_DAY = 1440.0


def insulin_infusion_record(
    subject: str, protocol: str, rate: float, unit: str = "mU/m2/min", duration: float = 120.0
) -> dict:
    """A clamp's insulin infusion as a doses.csv row (docs/data.md), from time 0."""
    return dict(
        subject=subject,
        protocol=protocol,
        time=0.0,
        time_unit="min",
        route="iv",
        substance="insulin",
        amount=rate,
        unit=unit,
        duration=duration,
    )


def _records(doses: pd.DataFrame, route: str, substance: str) -> pd.DataFrame:
    return doses[(doses["route"] == route) & (doses["substance"] == substance)].sort_values("time")


def _expand_repeats(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(times, amounts) with repeat_every/repeat_count expanded."""
    times, amounts = [], []
    for _, r in rows.iterrows():
        count = 1 if pd.isna(r["repeat_count"]) else int(r["repeat_count"])
        every = 0.0 if pd.isna(r["repeat_every"]) else float(r["repeat_every"])
        for k in range(count):
            times.append(float(r["time"]) + k * every)
            amounts.append(float(r["amount"]))
    return np.asarray(times), np.asarray(amounts)


def _mg_mmol(amount: float, unit: str) -> float:
    return {"mmol": amount, "mg": amount / MG_PER_MMOL_MAGNESIUM, "mEq": amount / 2.0}[unit]


def protocol_from_records(
    name: str,
    doses: pd.DataFrame,
    observations: pd.DataFrame,
    model: MgT2DModel | None = None,
    *,
    averaged_trials: bool = False,
) -> AbstractProtocol:
    """The protocol `name` with magnitudes from its dose records."""
    if name == "fasting":
        return fasting()
    if name == "hyperinsulinemic_clamp":
        return _hyperinsulinemic_clamp(doses, observations)
    if name == "hyperglycemic_clamp":
        return _hyperglycemic_clamp(observations)
    if name == "ivgtt":
        return _ivgtt(doses)
    if name == "ogtt":
        return _ogtt(doses)
    if name == "mg_trial":
        return _mg_trial(doses, observations, averaged_trials)
    if name == FORCED_GLUCOSE:
        raise DatasetError(
            f"a {FORCED_GLUCOSE} protocol is its measured glucose series, not a protocol "
            "object: build its experiment with mgjax.fit.experiments_from_records"
        )
    raise DatasetError(f"unknown protocol {name!r}")


def _duration(observations: pd.DataFrame) -> float:
    """The last observation time (min, rounded up); 120 without observations."""
    return float(np.ceil(observations["time"].max())) if len(observations) else 120.0


def _glucose(observations: pd.DataFrame) -> pd.DataFrame:
    return observations[observations["observable"] == "glucose"]


def _hyperinsulinemic_clamp(
    doses: pd.DataFrame, observations: pd.DataFrame
) -> HyperinsulinemicClamp:
    """Insulin rate from the 'iv insulin' record; the measured GIR from 'iv glucose' records;
    the target glucose (mmol/L) the mean observed glucose from 30 min on."""
    insulin = _records(doses, "iv", "insulin")
    if insulin.empty:
        raise DatasetError(
            "doses.csv: a hyperinsulinemic_clamp needs an 'iv insulin' record "
            "(amount in mU/m2/min or mU/kg/min)"
        )
    gir = _records(doses, "iv", "glucose")
    measured = None
    if not gir.empty:
        times = gir["time"].to_numpy(dtype=float)
        rates = gir["amount"].to_numpy(dtype=float)
        measured = PiecewiseConstant(times, rates)
    glucose_obs = _glucose(observations)
    late = glucose_obs[glucose_obs["time"] >= 30.0]["value"]
    target = float(late.mean()) if len(late) else float("nan")
    return HyperinsulinemicClamp(
        insulin_rate=float(insulin["amount"].iloc[0]),
        per_kg=insulin["unit"].iloc[0] == "mU/kg/min",
        target_glucose=target,
        duration=max(_duration(observations), 60.0),
        measured_gir=measured,
    )


def _hyperglycemic_clamp(observations: pd.DataFrame) -> HyperglycemicClamp:
    """The glucose increment (mmol/L): mean observed glucose from 10 min on minus the basal
    (6.9 without both)."""
    glucose_obs = _glucose(observations)
    basal = glucose_obs[glucose_obs["time"] == 0.0]["value"]
    late = glucose_obs[glucose_obs["time"] >= 10.0]["value"]
    increment = float(late.mean() - basal.iloc[0]) if len(basal) and len(late) else 6.9
    return HyperglycemicClamp(increment=increment, duration=max(_duration(observations), 30.0))


def _ivgtt(doses: pd.DataFrame) -> IVGTT:
    """Glucose and insulin doses (and durations, times) from the 'iv' records."""
    glucose = _records(doses, "iv", "glucose")
    insulin = _records(doses, "iv", "insulin")
    kwargs: dict[str, Any] = {}
    if not glucose.empty:
        kwargs["glucose_dose"] = float(glucose["amount"].iloc[0])
        if not pd.isna(glucose["duration"].iloc[0]):
            kwargs["glucose_duration"] = float(glucose["duration"].iloc[0])
    kwargs["insulin_dose"] = float(insulin["amount"].iloc[0]) if not insulin.empty else 0.0
    if not insulin.empty:
        kwargs["insulin_time"] = float(insulin["time"].iloc[0])
        if not pd.isna(insulin["duration"].iloc[0]):
            kwargs["insulin_duration"] = float(insulin["duration"].iloc[0])
    return IVGTT(**kwargs)


def _ogtt(doses: pd.DataFrame) -> OGTT:
    """The glucose drunk (g) from the 'oral glucose' record; 75 g without one."""
    glucose = _records(doses, "oral", "glucose")
    return OGTT(glucose_dose=float(glucose["amount"].iloc[0])) if not glucose.empty else OGTT()


def _mg_trial(
    doses: pd.DataFrame, observations: pd.DataFrame, averaged: bool
) -> OralMagnesiumTrial:
    """Oral Mg²⁺ doses (one size, one salt) from the 'oral magnesium' records, visits on the
    observation days; without records a placebo arm."""
    oral = _records(doses, "oral", "magnesium")
    visit_days = np.unique(np.floor(observations["time"].to_numpy(dtype=float) / MINUTES_PER_DAY))
    if oral.empty:  # a placebo arm: no Mg²⁺ on the same daily schedule until the last visit
        days = max(int(visit_days.max()) if len(visit_days) else 1, 1)
        times, mmol, salt = 60.0 + MINUTES_PER_DAY * np.arange(days), 0.0, "chloride"
    else:
        times, mmol, salt = _oral_doses(oral)
    return OralMagnesiumTrial(
        dose=mmol,
        dose_times=times,
        visit_days=visit_days,
        bioavailability=SALT_BIOAVAILABILITY[salt],
        averaged=averaged,
    )


def _oral_doses(oral: pd.DataFrame) -> tuple[Any, float, str]:
    """(dose times (min), dose (mmol), salt) of an arm's oral Mg²⁺ records."""
    times, amounts = _expand_repeats(oral)
    units = set(oral["unit"])
    mmol = _mg_mmol(float(amounts[0]), oral["unit"].iloc[0])
    if len(units) > 1 or not np.allclose(amounts, amounts[0]):
        raise DatasetError(
            "doses.csv: an mg_trial arm must give one dose size in one unit; split arms "
            "into separate subjects"
        )
    salt = (oral["salt"].iloc[0] or "chloride") if "salt" in oral.columns else "chloride"
    if salt not in SALT_BIOAVAILABILITY:
        known = ", ".join(SALT_BIOAVAILABILITY)
        raise DatasetError(f"doses.csv: unknown salt {salt!r}; use one of {known}")
    return times, mmol, salt
