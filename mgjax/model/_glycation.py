"""HbA1c: glycation of a red-cell population with a ~120-day lifespan.

The red cells are an age-structured population: a chain of n age classes, each holding 1/n of
the cells for T/n days, so a cell dies at age ≈ T (a gamma-distributed lifespan with shape n).
New cells enter unglycated; haemoglobin in every class glycates at a rate proportional to
glucose. HbA1c is the mean glycated fraction plus the assay offset of the ADAG relation.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import AbstractSubmodel
from ._parameter import parameter

N_AGE_CLASSES = 4
_ADAG = "ADAG: eAG(mg/dL) = 28.7·HbA1c − 46.7 (Nathan et al., Diabetes Care 2008;31:1473)"


class Glycation(AbstractSubmodel):
    """States: glycated haemoglobin fraction in each red-cell age class H_k (–).

    dH_1/dt = k_g·G_m·(1 − H_1) − (n/T)·H_1
    dH_k/dt = k_g·G_m·(1 − H_k) + (n/T)·(H_{k−1} − H_k)
    HbA1c(%) = offset + 100·mean_k H_k,   G_m = daily-mean glucose (glucose–insulin module)
    """

    name: ClassVar[str] = "glycation"
    state_names: ClassVar[tuple[str, ...]] = tuple(
        f"glycated_hb_{k + 1}" for k in range(N_AGE_CLASSES)
    )
    state_units: ClassVar[tuple[str, ...]] = ("-",) * N_AGE_CLASSES

    rbc_lifespan: Any = parameter(
        120.0, "day", (60.0, 150.0), "red-cell lifespan T", "~120 days (issue; textbook)"
    )
    glycation_rate: Any = parameter(
        6.0e-8,
        "1/(mmol/L)/min",
        (3.5e-8, 1.0e-7),
        "haemoglobin glycation rate constant k_g",
        f"calibrated: slope of {_ADAG}; range: people differ by about ±1% HbA1c at equal "
        "mean glucose (haemoglobin glycation index, Hempe et al., J Diabetes Complications "
        "2002;16:313)",
    )
    hba1c_offset: Any = parameter(
        1.63,
        "%",
        (0.0, 3.0),
        "glucose-independent HbA1c assay offset",
        f"intercept of {_ADAG}",
        log_scale=False,
    )

    def hba1c(self, s, xp) -> Any:
        """HbA1c in % (DCCT/NGSP)."""
        mean = sum(s[n] for n in self.state_names) / N_AGE_CLASSES
        return self.hba1c_offset + 100.0 * mean

    def rates(self, s, *, daily_mean_glucose) -> dict[str, Any]:
        k = self.glycation_rate * daily_mean_glucose
        renewal = N_AGE_CLASSES / (self.rbc_lifespan * 1440.0)
        out = {}
        previous = 0.0
        for n in self.state_names:
            h = s[n]
            out[n] = k * (1.0 - h) + renewal * (previous - h)
            previous = h
        return out
