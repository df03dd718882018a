"""The bundled published reference numbers (`mgjax/data/published_targets.csv`)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import pandas as pd


@cache
def published_targets() -> pd.DataFrame:
    """Published group-level numbers with their spread and source, one row per number."""
    with resources.files("mgjax").joinpath("data/published_targets.csv").open("r") as f:
        return pd.read_csv(f)


def published(study: str, arm: str, observable: str, time: float | None = None) -> pd.Series:
    """The row of one published number (value, spread, unit, source)."""
    t = published_targets()
    rows = t[(t["study"] == study) & (t["arm"] == arm) & (t["observable"] == observable)]
    if time is not None:
        rows = rows[rows["time"] == time]
    if len(rows) != 1:
        raise KeyError(f"{len(rows)} published rows for {study}/{arm}/{observable}/{time}")
    return rows.iloc[0]
