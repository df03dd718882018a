"""Oral Mg²⁺ supplementation trials: daily doses of elemental Mg²⁺ on top of the habitual diet,
for weeks to months, with fasting visits and 24-h urine collections.

Two paths for the same protocol:

- `averaged=False` (exact): every dose is a 15-min pulse into the gut lumen; the solver steps
  onto each pulse, so a 16-week trial resolves 112 absorption transients.
- `averaged=True` (slow-manifold path): the daily doses are replaced by their mean rate. The
  fasting visits of a trial sample the slow Mg²⁺/HbA1c manifold, on which the daily transients
  average out; this path costs ~20× fewer solver steps. Because intestinal absorption is
  saturable, a spread-out dose is absorbed slightly better than a bolus; the size of that
  difference at the visits is measured in `tests/test_protocols.py` and docs/protocols.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ..model import Inputs, ModelLike
from ._base import (
    MINUTES_PER_DAY,
    AbstractProtocol,
    _as_array,
    daily_times,
    piecewise_constant,
    pulse_arrays,
)

#: mg of elemental Mg per mmol.
MG_PER_MMOL_MAGNESIUM = 24.305

#: Absorbability of a salt's elemental Mg²⁺ relative to a dissolved chloride (the lumen model's
#: reference; fraction, 0 < f ≤ 1). Organic salts and the chloride are absorbed alike; the oxide
#: about 40% as well: fractional absorption 4% (MgO) vs 9–11% (chloride, lactate, aspartate),
#: Firoz & Graber, Magnes Res 2001;14:257 (from the literature, not in physiology.md).
#: Gluconate and pidolate: no human fractional-absorption measurement found; in Mg-depleted rats
#: (26Mg, n = 8 per salt) all ten salts tested were absorbed 50–67%, gluconate the highest (67%),
#: pidolate within that range and organic salts slightly above inorganic ones (Coudray et al.,
#: Magnes Res 2005;18:215), so both are set like the other organic salts; ranges in
#: docs/model.md. Fit `OralMagnesiumTrial.bioavailability` where a trial's data allow.
SALT_BIOAVAILABILITY: dict[str, float] = {
    "chloride": 1.0,
    "lactate": 1.0,
    "aspartate": 1.0,
    "citrate": 1.0,
    "gluconate": 1.0,
    "pidolate": 1.0,
    "oxide": 0.4,
}


def _check_bioavailability(value: Any) -> None:
    """Refuse a concrete fractional bioavailability outside 0 < f ≤ 1 (NaN included)."""
    if isinstance(value, jax.core.Tracer):
        return
    f = np.asarray(value, dtype=float)
    if not (np.all(np.isfinite(f)) and np.all(f > 0.0) and np.all(f <= 1.0)):
        raise ValueError(
            f"bioavailability must be a fraction 0 < f ≤ 1 of the dose absorbed as a dissolved "
            f"chloride's would be (got {f.tolist()})"
        )


class OralMagnesiumTrial(AbstractProtocol):
    """Daily oral elemental Mg²⁺ with fasting visits.

    - `dose`: elemental Mg²⁺ per dose, mmol (0 for a placebo arm);
    - `bioavailability`: the salt's relative absorbability (`SALT_BIOAVAILABILITY`);
    - `dose_times`: times of the doses (min); default daily at 60 min after each day's fasting
      visit time, for `weeks` weeks;
    - `dose_duration`: min over which a dose enters the gut lumen;
    - `visit_days`: days of the fasting visits (sample before that day's dose; the 24-h urine
      is collected over the following day);
    - `averaged`: the slow-manifold path (module docstring).
    """

    piecewise_constant: ClassVar[bool] = True

    magnitudes: ClassVar[tuple[str, ...]] = ("dose", "bioavailability")

    dose: Any = eqx.field(converter=_as_array)
    dose_times: Any = eqx.field(converter=_as_array)
    visit_days: Any = eqx.field(converter=_as_array)
    bioavailability: Any = eqx.field(default=1.0, converter=_as_array)
    dose_duration: Any = eqx.field(default=15.0, converter=_as_array)
    averaged: bool = eqx.field(default=False, static=True)

    @classmethod
    def daily(
        cls,
        dose_mmol: ArrayLike,
        weeks: int,
        *,
        salt: str | None = None,
        bioavailability: ArrayLike | None = None,
        visit_weeks: tuple[int, ...] | None = None,
        averaged: bool = False,
        dose_time: ArrayLike = 60.0,
    ) -> "OralMagnesiumTrial":
        """`dose_mmol` elemental Mg²⁺ once a day for `weeks` weeks, visits at `visit_weeks`
        (default: baseline, every 4 weeks and the end).

        The absorbability is the `salt`'s (`SALT_BIOAVAILABILITY`; default chloride) or an
        explicit `bioavailability` (fraction of a dissolved chloride's, 0 < f ≤ 1), which
        replaces the default salt. Giving both is accepted only where they agree (the table's
        value for that salt); otherwise it is refused as contradictory."""
        if salt is not None and salt not in SALT_BIOAVAILABILITY:
            raise ValueError(
                f"unknown Mg salt {salt!r}; known: {', '.join(SALT_BIOAVAILABILITY)} "
                "(or give bioavailability= directly, a fraction 0 < f ≤ 1)"
            )
        if bioavailability is None:
            bioavailability = SALT_BIOAVAILABILITY[salt or "chloride"]
        else:
            _check_bioavailability(bioavailability)
            if salt is not None and not isinstance(bioavailability, jax.core.Tracer):
                if not np.allclose(bioavailability, SALT_BIOAVAILABILITY[salt]):
                    raise ValueError(
                        f"salt={salt!r} (bioavailability {SALT_BIOAVAILABILITY[salt]:g}) "
                        f"contradicts bioavailability={np.asarray(bioavailability).tolist()}; "
                        "give one of them (bioavailability= alone for a measured value)"
                    )
        if visit_weeks is None:
            visit_weeks = tuple(sorted({0, *range(4, weeks, 4), weeks}))
        return cls(
            dose=dose_mmol,
            dose_times=daily_times(dose_time, 7 * weeks),
            visit_days=7.0 * jnp.asarray(visit_weeks, dtype=jnp.float64),
            bioavailability=bioavailability,
            averaged=averaged,
        )

    def placebo(self) -> "OralMagnesiumTrial":
        """The same protocol with no Mg²⁺ (same shapes, so both arms vmap together)."""
        return eqx.tree_at(lambda p: p.dose, self, jnp.zeros_like(self.dose))

    def _schedule(self, xp: Any = jnp) -> tuple[Any, Any]:
        """(times, rates) of the Mg²⁺ entering the gut lumen (mmol/min)."""
        amount = self.bioavailability * self.dose
        if self.averaged:
            n = self.dose_times.shape[0]
            span = xp.maximum((self.dose_times[-1] - self.dose_times[0]) * n / max(n - 1, 1), 1.0)
            start = self.dose_times[0]
            return xp.stack([start, start + span]), xp.stack([amount * n / span, 0.0 * amount])
        return pulse_arrays(self.dose_times, self.dose_duration, amount / self.dose_duration, xp)

    def inputs(self, t: Any, y: Any, z: Any, model: ModelLike, xp: Any = jnp) -> Inputs:
        times, rates = self._schedule(xp)
        return Inputs(
            glucose_infusion=0.0,
            insulin_infusion=0.0,
            oral_mg=piecewise_constant(times, rates, t, xp),
            iv_mg=0.0,
        )

    def jump_times(self) -> Any:
        return self._schedule(jnp)[0]

    def sampling_times(self) -> Any:
        """Each visit's fasting sample and the end of its 24-h urine collection (min)."""
        start = self.visit_days * MINUTES_PER_DAY
        return jnp.sort(jnp.concatenate([start, start + MINUTES_PER_DAY]))

    def summary(self, traj: Any) -> dict[str, Any]:
        """Per visit: fasting serum Mg²⁺, glucose, insulin, HOMA-IR, HbA1c (sampled before the
        day's dose) and the 24-h urinary Mg²⁺ (mmol/day) collected over the following day."""
        start = self.visit_days * MINUTES_PER_DAY
        end = start + MINUTES_PER_DAY

        def at(name, times):
            return jnp.interp(times, traj.ts, traj[name])

        out = {k: at(k, start) for k in ["serum_mg", "glucose", "insulin", "homa_ir", "hba1c"]}
        out["urinary_mg_24h"] = at("urinary_mg_cumulative", end) - at(
            "urinary_mg_cumulative", start
        )
        out["visit_day"] = self.visit_days
        return out
