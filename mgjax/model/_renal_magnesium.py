"""Renal Mg²⁺ handling: glomerular filtration of ultrafiltrable Mg²⁺, proximal-tubule and
thick-ascending-limb (TAL, paracellular, CaSR-sensed) reabsorption, and distal-convoluted-tubule
(DCT) reabsorption through TRPM6, which fine-tunes the final excretion.

TRPM6 activity is the product of two mechanisms, each a method that can be replaced:

- `trpm6_insulin_response`: exp(γ·S/(S + K_S)). Insulin activates TRPM6 (Nair et al., PNAS
  2012), so the default γ > 0 and insulin resistance (lower S) means Mg²⁺ wasting. One line
  of clinical work (Djurhuus, Magnes Res 2001;14:217) holds that insulin *raises* Mg²⁺
  excretion: γ < 0. The sign is a fit parameter.
- `trpm6_magnesium_response`: intracellular Mg²⁺ inhibits TRPM6 gating (Sci Rep 2011;1:146), and
  dietary Mg²⁺ restriction up-regulates TRPM6 (Groenestege et al., JASN 2006;17:1035).

Glycosuria (osmotic diuresis, evaluated at the daily-mean glucose) reduces TAL reabsorption:
hyperglycaemia-driven Mg²⁺ wasting, the main driver of renal Mg²⁺ loss in diabetes according
to Djurhuus 2001.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import AbstractSubmodel
from ._parameter import parameter

_RENAL_CALIBRATION = (
    "calibrated: FEMg ≈ 3.7% and urinary Mg ≈ 4 mmol/day at serum 0.88 mmol/L (Lübeck controls "
    "FEMg 3.5 ± 1.3%, 5.8 ± 2.2 mmol/day); ~12% of filtered Mg²⁺ reaches the DCT (~10%, Ren "
    "Physiol 9:257), which reabsorbs ~8% (5–10%); serum +0.03–0.04 mmol/L and urinary "
    "+1.4–1.8 mmol/day with a 15 mmol/day supplement (de Valk 1998)"
)


class RenalMagnesium(AbstractSubmodel):
    """Stateless (the kidney is at quasi-steady state on the minute scale); it gives the urinary
        Mg²⁺ excretion U_Mg (mmol/min).

        F = GFR·S_uf;   L_TAL = (1 − f_PT)·F
        f_TAL = f_TAL,max / (1 + (S_ion/K_TAL)^n) / (1 + k_gly·E_glucose)   (of the TAL load)
        L_DCT = (1 − f_TAL)·L_TAL
        A_TRPM6 = exp(γ·S/(S + K_S)) · 1/(1 + Mg_i/K_TRPM6)
        f_DCT = V_DCT·A_TRPM6/(K_DCT + L_DCT + V_DCT·A_TRPM6)               (of the DCT load)
        U_Mg = (1 − f_DCT)·L_DCT

    Each segment reabsorbs a fraction (0, 1) of what reaches it, so excretion stays positive for
    every parameter value; DCT transport is saturable in its load (Michaelis–Menten, V_DCT·A·L/(K+L)
    when far from complete reabsorption).
    """

    name: ClassVar[str] = "renal_magnesium"

    gfr: Any = parameter(
        0.125,
        "L/min",
        (0.01, 0.25),
        "glomerular filtration rate (180 L/day)",
        "adult reference GFR (physiology.md §1.4, derived filtered load)",
    )
    proximal_fraction: Any = parameter(
        0.20,
        "-",
        (0.05, 0.35),
        "fraction of filtered Mg²⁺ reabsorbed in the proximal tubule",
        "15–20% (NephKids), 5–15% (Pediatr Nephrol review), 20–30% (Ren Physiol 9:257)",
    )
    tal_fraction_max: Any = parameter(
        0.999,
        "-",
        (0.5, 0.9999),
        "maximal fraction of the TAL load reabsorbed (low serum Mg²⁺)",
        "TAL reabsorbs 50–72% of filtered Mg²⁺ (≈85% of what leaves the proximal tubule) at "
        "normal serum Mg²⁺; <1 mEq/day urinary Mg on a Mg-free diet (physiology.md §1.4)",
    )
    tal_mg_ec50: Any = parameter(
        0.729,
        "mmol/L",
        (0.3, 2.0),
        "serum ionised Mg²⁺ halving TAL reabsorption (CaSR)",
        _RENAL_CALIBRATION,
    )
    tal_mg_hill: Any = parameter(
        6.0, "-", (1.0, 10.0), "steepness of CaSR inhibition of TAL", _RENAL_CALIBRATION
    )
    glycosuria_tal_inhibition: Any = parameter(
        4.0,
        "min/mmol",
        (0.0, 50.0),
        "reduction of TAL reabsorption per unit glycosuria k_gly",
        "calibrated: serum Mg ≈ 0.67 mmol/L at fasting glucose ≈ 12 mmol/L in T2DM "
        "(Rodríguez-Morán 2003 population; plasma Mg falls with glucose, Kurstjens 2017); "
        "form: hyperglycaemia is the main driver of renal Mg loss (Djurhuus, Magnes Res 2001)",
        log_scale=False,
    )
    dct_capacity: Any = parameter(
        0.0217,
        "mmol/min",
        (0.002, 0.2),
        "DCT (TRPM6) transport capacity at unit activity",
        _RENAL_CALIBRATION,
    )
    dct_km: Any = parameter(
        0.006,
        "mmol/min",
        (0.0005, 0.05),
        "DCT load giving half-maximal reabsorption",
        _RENAL_CALIBRATION,
    )
    trpm6_insulin_coupling: Any = parameter(
        3.0,
        "-",
        (-10.0, 10.0),
        "γ: log-change of TRPM6 activity at saturating insulin signal (>0 activation, <0 Djurhuus)",
        "direction: Nair et al., PNAS 2012 (insulin activates TRPM6); size not found "
        "(physiology.md §9) — fit to decide",
        log_scale=False,
    )
    trpm6_insulin_k: Any = parameter(
        0.1,
        "-",
        (0.005, 2.0),
        "insulin signal giving half the TRPM6 insulin effect",
        "not found; places fasting signals (0.03–0.04) on the responsive part of the curve",
    )
    trpm6_mg_ki: Any = parameter(
        1.0,
        "mmol/L",
        (0.1, 10.0),
        "intracellular free Mg²⁺ halving TRPM6 activity",
        "TRPM6 inhibited by mM intracellular Mg²⁺ (Sci Rep 2011;1:146, PMC3238349)",
    )

    def filtered_load(self, ultrafiltrable) -> Any:
        """Filtered Mg²⁺ F (mmol/min)."""
        return self.gfr * ultrafiltrable

    def tal_fraction(self, ionized, glycosuria) -> Any:
        """Fraction of the Mg²⁺ reaching the TAL that it reabsorbs."""
        r = (ionized / self.tal_mg_ec50) ** self.tal_mg_hill
        return (
            self.tal_fraction_max / (1.0 + r) / (1.0 + self.glycosuria_tal_inhibition * glycosuria)
        )

    def trpm6_insulin_response(self, insulin_signal, xp) -> Any:
        """Insulin dependence of TRPM6 activity (–)."""
        saturation = insulin_signal / (self.trpm6_insulin_k + insulin_signal)
        return xp.exp(self.trpm6_insulin_coupling * saturation)

    def trpm6_magnesium_response(self, mg_free) -> Any:
        """Intracellular Mg²⁺ dependence of TRPM6 activity (–)."""
        return 1.0 / (1.0 + mg_free / self.trpm6_mg_ki)

    def trpm6_activity(self, insulin_signal, mg_free, xp) -> Any:
        return self.trpm6_insulin_response(insulin_signal, xp) * self.trpm6_magnesium_response(
            mg_free
        )

    def excretion(self, *, ultrafiltrable, ionized, mg_free, insulin_signal, glycosuria, xp) -> Any:
        """Urinary Mg²⁺ excretion U_Mg (mmol/min)."""
        filtered = self.filtered_load(ultrafiltrable)
        tal_load = (1.0 - self.proximal_fraction) * filtered
        delivered = (1.0 - self.tal_fraction(ionized, glycosuria)) * tal_load
        transport = self.dct_capacity * self.trpm6_activity(insulin_signal, mg_free, xp)
        dct_fraction = transport / (self.dct_km + delivered + transport)
        return (1.0 - dct_fraction) * delivered
