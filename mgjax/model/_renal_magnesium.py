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

Hyperglycaemia raises Mg²⁺ excretion by two routes, both acting on the TAL as a shift of its
CaSR set point (the kidney still conserves Mg²⁺ once serum Mg²⁺ falls far enough, so no
parameter value makes excretion run away): glycosuria (osmotic diuresis, at the daily-mean
glucose; the main driver of renal Mg²⁺ loss in diabetes according to Djurhuus 2001) and
plasma glucose itself, without glycosuria (renal Mg²⁺ excretion × 2.4 when glucose is raised
from 5.3 to 12.3 mmol/L at equal insulin, Djurhuus 2000 in Magnes Res 2001;14:217).

DCT transport capacity is scaled by two further factors: the basolateral driving force set by
the Na⁺-K⁺-ATPase and its γ-subunit FXYD2 (dominant-negative FXYD2 causes isolated renal Mg²⁺
wasting, Meij et al., Nat Genet 2000;26:265), and TRPM6 down-regulation by thiazides (Nijenhuis
et al., J Clin Invest 2005;115:1651), off by default (`mgjax.THERAPY_CHANGES`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import AbstractSubmodel, softplus
from ._parameter import parameter

#: Calibrated defaults (see the parameters' sources).
GLYCOSURIA_TAL_INHIBITION = 30.0
HYPERGLYCAEMIA_TAL_INHIBITION = 0.18

_RENAL_CALIBRATION = (
    "calibrated: FEMg 3.6% and urinary Mg 3.9 mmol/day at serum 0.87 mmol/L (Lübeck controls "
    "FEMg 3.5 ± 1.3%, 5.8 ± 2.2 mmol/day); ~10% of filtered Mg²⁺ reaches the DCT (Ren "
    "Physiol 9:257), which reabsorbs 5–10%; serum +0.03–0.04 mmol/L and urinary "
    "+1.4–1.8 mmol/day with a 15 mmol/day supplement (de Valk 1998)"
)


class RenalMagnesium(AbstractSubmodel):
    """Stateless (the kidney is at quasi-steady state on the minute scale); it gives the urinary
        Mg²⁺ excretion U_Mg (mmol/min).

        F = GFR·S_uf;   L_TAL = (1 − f_PT)·F
        H = 1 + k_gly·E_glucose + k_hg·softplus(G − G_hg)   (hyperglycaemic shift of the set point)
        f_TAL = f_TAL,max / (1 + H·(S_ion/K_TAL)^n)                   (of the TAL load)
        L_DCT = (1 − f_TAL)·L_TAL
        A_TRPM6 = exp(γ·S/(S + K_S)) · 1/(1 + Mg_i/K_TRPM6)
        V = V_DCT·d_NKA·(1 − d_thz)                         (FXYD2 / Na⁺-K⁺-ATPase drive, thiazide)
        f_DCT = V·A_TRPM6/(K_DCT + L_DCT + V·A_TRPM6)                    (of the DCT load)
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
        GLYCOSURIA_TAL_INHIBITION,
        "min/mmol",
        (0.0, 300.0),
        "shift of the TAL set point per unit glycosuria k_gly",
        "calibrated with the t2dm_hypomagnesemia preset's intake: serum Mg 0.70 mmol/L at "
        "fasting glucose 12.2 mmol/L (Rodríguez-Morán 2003: ≤ 0.74, placebo 0.65 ± 0.07; "
        "plasma Mg falls with glucose, Kurstjens 2017) and a 16-week MgCl₂ effect of +0.07 "
        "mmol/L (published +0.09); form: hyperglycaemia is the main driver of renal Mg loss "
        "(Djurhuus, Magnes Res 2001)",
        log_scale=False,
    )
    hyperglycaemia_tal_inhibition: Any = parameter(
        HYPERGLYCAEMIA_TAL_INHIBITION,
        "L/mmol",
        (0.0, 2.0),
        "shift of the TAL set point per mmol/L of plasma glucose above G_hg, without "
        "glycosuria k_hg",
        "calibrated: renal Mg²⁺ excretion × 2.4 with glucose 5.3 → 12.3 mmol/L at equal "
        "insulin and no major glucosuria, plasma Mg −3% (Djurhuus et al. 2000, 10 type 1 "
        "patients; Djurhuus, Magnes Res 2001;14:217); osmotic and TAL effects (Gommers 2016)",
        log_scale=False,
    )
    hyperglycaemia_threshold: Any = parameter(
        5.5,
        "mmol/L",
        (4.5, 8.0),
        "plasma glucose above which it inhibits TAL Mg²⁺ reabsorption G_hg",
        "placed at the upper normal fasting glucose: the Djurhuus euglycaemic day (5.3 mmol/L) "
        "is the reference",
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
    dct_basolateral_drive: Any = parameter(
        1.0,
        "-",
        (0.3, 1.5),
        "DCT basolateral driving force (Na⁺-K⁺-ATPase with its γ-subunit FXYD2) relative to "
        "normal d_NKA",
        "FXYD2 G41R (dominant negative) causes isolated dominant hypomagnesaemia with renal "
        "Mg²⁺ wasting (Meij et al., Nat Genet 2000;26:265); HNF1B drives FXYD2 "
        "transcription (de Baaij et al., Physiol Rev 2015;95:1); the basolateral potential "
        "drives apical TRPM6 entry — 1 in health, the factor a fit or a genotype sets",
    )
    thiazide_trpm6_suppression: Any = parameter(
        0.0,
        "-",
        (0.0, 0.8),
        "fractional loss of DCT TRPM6 transport under a thiazide d_thz",
        "off by default; 0.3 under a thiazide (`THERAPY_CHANGES`): chronic "
        "hydrochlorothiazide down-regulates renal TRPM6 and raises urinary Mg²⁺ (Nijenhuis et "
        "al., J Clin Invest 2005;115:1651) — size for the data to set",
        log_scale=False,
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

    def hyperglycaemic_shift(self, glucose, glycosuria, xp) -> Any:
        """Factor H ≥ 1 by which hyperglycaemia and glycosuria raise the TAL's Mg²⁺ signal."""
        excess = softplus(glucose - self.hyperglycaemia_threshold, 0.5, xp)
        return (
            1.0
            + self.glycosuria_tal_inhibition * glycosuria
            + self.hyperglycaemia_tal_inhibition * excess
        )

    def tal_fraction(self, ionized, glucose, glycosuria, xp) -> Any:
        """Fraction of the Mg²⁺ reaching the TAL that it reabsorbs."""
        r = (ionized / self.tal_mg_ec50) ** self.tal_mg_hill
        return self.tal_fraction_max / (
            1.0 + self.hyperglycaemic_shift(glucose, glycosuria, xp) * r
        )

    def dct_transport_capacity(self) -> Any:
        """DCT transport capacity at unit TRPM6 activity after the basolateral drive and
        thiazide effects (mmol/min)."""
        return (
            self.dct_capacity * self.dct_basolateral_drive * (1.0 - self.thiazide_trpm6_suppression)
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

    def excretion(
        self, *, ultrafiltrable, ionized, mg_free, insulin_signal, glucose, glycosuria, xp
    ) -> Any:
        """Urinary Mg²⁺ excretion U_Mg (mmol/min)."""
        filtered = self.filtered_load(ultrafiltrable)
        tal_load = (1.0 - self.proximal_fraction) * filtered
        delivered = (1.0 - self.tal_fraction(ionized, glucose, glycosuria, xp)) * tal_load
        transport = self.dct_transport_capacity() * self.trpm6_activity(insulin_signal, mg_free, xp)
        dct_fraction = transport / (self.dct_km + delivered + transport)
        return (1.0 - dct_fraction) * delivered
