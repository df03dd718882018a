"""Whole-body glucose–insulin kinetics: plasma glucose, plasma insulin, the delayed hepatic
insulin signal, hepatic glucose output, insulin-independent uptake and renal glucose loss.

Insulin-*dependent* (GLUT4) uptake belongs to the insulin-signalling module, which owns the
remote insulin action; insulin secretion belongs to the beta-cell module.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import AbstractSubmodel, softplus
from ._parameter import parameter

# Sources quoted in docs/model.md.
_DALLA_MAN = "Dalla Man, Rizza & Cobelli, IEEE TBME 2007;54:1740 (Table 1)"
_HOVORKA = "Hovorka et al., Physiol Meas 2004;25:905"


class GlucoseInsulin(AbstractSubmodel):
    """Plasma glucose G (mmol/L), plasma insulin I (pmol/L), the delayed insulin signal
    seen by the liver I_H (pmol/L) and the glucose of the slowly equilibrating peripheral space
    G_P (mmol/L).

    dG/dt = (EGP + glucose infusion − U_ii − U_id − E_renal) / (V_G·W) − k₁·(G − G_P)
    dG_P/dt = k₁·(V_G/V_P)·(G − G_P)
    dI/dt = ((1 − HE)·ISR + insulin infusion + R_therapy) / (V_I·W) − k_I·I
    EGP = EGP_max·W·((1 − m_met)·exp(−k_G·G)/(1 + (I_H/EC50)^h) + c_cr·softplus(G_cr − G))

    The last term is counter-regulation (glucagon, adrenaline): below G_cr the liver's output
    rises whatever the insulin, so no parameter setting rests at a glucose incompatible with
    life.

    Background therapy, off by default (`mgjax.THERAPY_CHANGES`): basal insulin R_therapy
    (subcutaneous basal insulin at its steady absorption rate, in every protocol) and
    metformin's suppression of hepatic glucose output m_met.
    dI_H/dt = k_H·(I − I_H)
    """

    name: ClassVar[str] = "glucose_insulin"
    state_names: ClassVar[tuple[str, ...]] = (
        "glucose",
        "insulin",
        "hepatic_insulin",
        "peripheral_glucose",
    )
    state_units: ClassVar[tuple[str, ...]] = ("mmol/L", "pmol/L", "pmol/L", "mmol/L")

    body_weight: Any = parameter(
        75.0, "kg", (35.0, 200.0), "body weight W", "subject covariate", log_scale=True
    )
    height: Any = parameter(
        175.0, "cm", (130.0, 215.0), "body height (for body surface area)", "subject covariate"
    )
    glucose_volume: Any = parameter(
        0.17,
        "L/kg",
        (0.12, 0.25),
        "glucose distribution volume V_G",
        f"{_HOVORKA} (0.16 L/kg); {_DALLA_MAN} (1.88 dL/kg)",
    )
    glucose_exchange_rate: Any = parameter(
        0.065,
        "1/min",
        (0.02, 0.2),
        "rate constant of glucose transfer from plasma to the slowly equilibrating peripheral "
        "glucose space k₁",
        f"{_DALLA_MAN}: k1 = 0.065 /min",
    )
    peripheral_glucose_volume: Any = parameter(
        0.14,
        "L/kg",
        (0.05, 0.3),
        "volume of the slowly equilibrating peripheral glucose space V_P",
        f"{_DALLA_MAN}: k1·V_G/k2 with k1 = 0.065, k2 = 0.079 /min; the total glucose space "
        "V_G + V_P = 0.31 L/kg (one-compartment effective pool ≥ 0.23 L/kg, Livesey et al., "
        "Am J Physiol 1998;275:E717)",
    )
    egp_max: Any = parameter(
        0.01398,
        "mmol/kg/min",
        (0.007, 0.035),
        "endogenous glucose production extrapolated to zero insulin and zero glucose",
        "calibrated: basal EGP 2.0 mg/kg/min at fasting glucose 5 mmol/L (Diabetes 2001;50:1449)",
    )
    hepatic_insulin_ec50: Any = parameter(
        138.0,
        "pmol/L",
        (30.0, 2000.0),
        "insulin giving half-maximal suppression of EGP",
        "calibrated: EGP suppressed ~60% at 0.25 mU/kg/min, >90% at 1 mU/kg/min "
        "(Diabetes 2001;50:1449, ΔRa 1.25 of ~2 mg/kg/min in NGT)",
    )
    hepatic_insulin_hill: Any = parameter(
        2.0,
        "-",
        (0.5, 4.0),
        "Hill coefficient of EGP suppression by insulin",
        "calibrated to the same two suppression levels",
    )
    egp_glucose_sensitivity: Any = parameter(
        0.03,
        "L/mmol",
        (0.005, 0.2),
        "suppression of EGP by glucose (hepatic autoregulation), EGP ∝ exp(−k·G)",
        f"{_DALLA_MAN}: kp2 = 0.0021 /min ≈ 18% EGP fall for +7 mmol/L",
        log_scale=False,
    )
    counterregulation_threshold: Any = parameter(
        3.8,
        "mmol/L",
        (3.0, 4.5),
        "plasma glucose below which counter-regulatory hormones raise EGP G_cr",
        "glycaemic thresholds for glucagon and adrenaline release 3.6–3.9 mmol/L (Mitrakou et "
        "al., Am J Physiol 1991;260:E67; Cryer, Diabetes 2008 review)",
    )
    counterregulation_gain: Any = parameter(
        1.0,
        "L/mmol",
        (0.2, 5.0),
        "counter-regulatory EGP per mmol/L of glucose below G_cr, in units of EGP_max c_cr",
        "EGP roughly doubles when glucose falls ~1 mmol/L below the threshold during "
        "insulin-induced hypoglycaemia (glucagon and adrenaline responses, Mitrakou 1991; "
        "size approximate)",
    )
    hepatic_insulin_rate: Any = parameter(
        0.03,
        "1/min",
        (0.005, 0.2),
        "rate of the hepatic insulin signal (1/delay)",
        f"{_HOVORKA}: ka3 = 0.03 /min",
    )
    insulin_independent_uptake_max: Any = parameter(
        0.00866,
        "mmol/kg/min",
        (0.002, 0.03),
        "maximal insulin-independent glucose uptake (brain, red cells, splanchnic; GLUT1/3)",
        "calibrated: 1.2 mg/kg/min of the 2.0 mg/kg/min basal disposal is insulin-independent "
        "(brain ~1 mg/kg/min)",
    )
    insulin_independent_km: Any = parameter(
        1.5,
        "mmol/L",
        (0.5, 10.0),
        "half-saturation glucose of insulin-independent uptake",
        "GLUT1/GLUT3 affinity 1–3 mmol/L (textbook value; not in shared reference)",
    )
    renal_glucose_threshold: Any = parameter(
        10.0,
        "mmol/L",
        (7.0, 14.0),
        "renal threshold for glycosuria",
        f"{_DALLA_MAN}: ke2 = 339 mg/kg / V_G 1.88 dL/kg = 180 mg/dL",
    )
    renal_glucose_rate: Any = parameter(
        0.0005,
        "1/min",
        (0.0001, 0.005),
        "glycosuria rate constant above the threshold",
        f"{_DALLA_MAN}: ke1 = 0.0005 /min",
    )
    insulin_volume: Any = parameter(
        0.05, "L/kg", (0.03, 0.15), "insulin distribution volume V_I", f"{_DALLA_MAN}: VI"
    )
    insulin_clearance_rate: Any = parameter(
        0.2,
        "1/min",
        (0.05, 0.6),
        "first-order plasma insulin clearance k_I",
        "calibrated: metabolic clearance ≈ 10 mL/kg/min (plasma insulin ≈ 600–700 pmol/L at a "
        "1 mU/kg/min clamp); half-life 3.5 min",
    )
    hepatic_insulin_extraction: Any = parameter(
        0.6,
        "-",
        (0.2, 0.85),
        "first-pass hepatic extraction of secreted (portal) insulin",
        f"{_DALLA_MAN}: HEb = 0.6",
    )

    insulin_therapy_rate: Any = parameter(
        0.0,
        "pmol/min",
        (0.0, 150.0),
        "background basal insulin absorbed into plasma R_therapy (insulin therapy)",
        "off by default; 60 pmol/min under basal insulin (`THERAPY_CHANGES`): 0.2 U/kg/day "
        "at 75 kg = 15 U/day (basal insulin starts at 10 U or 0.1–0.2 U/kg/day, ADA Standards "
        "of Care 2024 §9), 1 U = 6 nmol; long-acting analogues are absorbed near-constantly",
        log_scale=False,
    )
    metformin_egp_reduction: Any = parameter(
        0.0,
        "-",
        (0.0, 0.5),
        "fractional suppression of hepatic glucose output by metformin m_met",
        "off by default; 0.24 under metformin (`THERAPY_CHANGES`): metformin lowered EGP by "
        "24% (gluconeogenesis by 36%) in T2DM (Hundal et al., Diabetes 2000;49:2063)",
        log_scale=False,
    )

    meal_glucose_excess: Any = parameter(
        1.0,
        "mmol/L",
        (0.0, 8.0),
        "24-h mean glucose minus fasting glucose: the meal excursions that fasting protocols do "
        "not simulate, seen by the slow processes (glycation, osmotic Mg²⁺ wasting)",
        "calibrated: HbA1c 5.4% at fasting 5 mmol/L in health (ADAG, Nathan et al. 2008); "
        "≈ 3 mmol/L in T2DM (HbA1c 11.5% at fasting 12.8 mmol/L, Rodríguez-Morán 2003)",
        log_scale=False,
    )

    # --- fluxes (all in mmol/min of glucose) -------------------------------------------
    def glucose_mass_volume(self) -> Any:
        """Glucose distribution volume V_G·W (L)."""
        return self.glucose_volume * self.body_weight

    def endogenous_glucose_production(self, glucose, hepatic_insulin, xp) -> Any:
        """EGP (mmol/min): suppressed by the delayed hepatic insulin signal and by glucose."""
        r = (hepatic_insulin / self.hepatic_insulin_ec50) ** self.hepatic_insulin_hill
        regulated = (
            (1.0 - self.metformin_egp_reduction)
            * xp.exp(-self.egp_glucose_sensitivity * glucose)
            / (1.0 + r)
        )
        return self.egp_max * self.body_weight * (regulated + self.counterregulation(glucose, xp))

    def counterregulation(self, glucose, xp) -> Any:
        """Counter-regulatory EGP (glucagon, adrenaline) in hypoglycaemia, per EGP_max (–)."""
        deficit = softplus(self.counterregulation_threshold - glucose, 0.2, xp)
        return self.counterregulation_gain * deficit

    def insulin_independent_uptake(self, glucose) -> Any:
        """U_ii (mmol/min): saturable GLUT1/3 uptake."""
        return (
            self.insulin_independent_uptake_max
            * self.body_weight
            * glucose
            / (self.insulin_independent_km + glucose)
        )

    def daily_mean_glucose(self, glucose) -> Any:
        """G_m (mmol/L): fasting-protocol glucose plus the meal excursions it leaves out."""
        return glucose + self.meal_glucose_excess

    def renal_glucose_excretion(self, glucose, xp) -> Any:
        """E_renal (mmol/min): glycosuria above the renal threshold (smoothed, width 0.5 mmol/L)."""
        excess = softplus(glucose - self.renal_glucose_threshold, 0.5, xp)
        return self.renal_glucose_rate * self.glucose_mass_volume() * excess

    def rates(
        self,
        s,
        *,
        egp,
        uptake_ii,
        uptake_id,
        glycosuria,
        glucose_infusion,
        secretion,
        insulin_infusion,
    ) -> dict[str, Any]:
        exchange = self.glucose_exchange_rate * (s["glucose"] - s["peripheral_glucose"])
        d_glucose = (
            egp + glucose_infusion - uptake_ii - uptake_id - glycosuria
        ) / self.glucose_mass_volume() - exchange
        d_peripheral = exchange * self.glucose_volume / self.peripheral_glucose_volume
        appearance = (
            (1.0 - self.hepatic_insulin_extraction) * secretion
            + insulin_infusion
            + self.insulin_therapy_rate
        )
        d_insulin = (
            appearance / (self.insulin_volume * self.body_weight)
            - self.insulin_clearance_rate * s["insulin"]
        )
        d_hepatic = self.hepatic_insulin_rate * (s["insulin"] - s["hepatic_insulin"])
        return dict(
            glucose=d_glucose,
            insulin=d_insulin,
            hepatic_insulin=d_hepatic,
            peripheral_glucose=d_peripheral,
        )
