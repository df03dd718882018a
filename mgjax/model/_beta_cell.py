"""Beta-cell: glucokinase, ATP/ADP energy state, KATP, depolarisation, L-type Ca²⁺ entry and
biphasic insulin secretion, with C-peptide co-secreted and its two-compartment kinetics.

Intracellular free Mg²⁺ enters in three places, each with its own strength so that data
can decide the contested net effect of Mg²⁺ on secretion:

1. glucokinase uses MgATP as co-substrate (low Mg²⁺ → less glycolytic flux → less secretion);
2. MgADP opens KATP through SUR1 (low Mg²⁺ → fewer open KATP → more depolarisation);
3. intracellular Mg²⁺ inhibits L-type Ca²⁺ channels (low Mg²⁺ → more Ca²⁺ entry).

The electrical subsystem (KATP, membrane potential, Ca²⁺ entry) is written in quasi-steady
state: it relaxes within seconds, far below the minute scale of clamps. The membrane potential
is the time-averaged (burst-averaged) potential and the Ca²⁺ entry the time-averaged L-type
activity.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import AbstractSubmodel, hill
from ._parameter import parameter

#: Calibrated default (see the parameter's source).
INCRETIN_GAIN = 5.0

_GK = "Diabetes 2006;55:1713 (human glucokinase S0.5 7.5 mmol/L, Hill 1.7)"
_BRUNET = "Brunet, Scheuer, Klevit & Catterall 2005 (CaV1.2, intracellular Mg²⁺ Kd 0.65 mM)"
_VANCAUTER = "Van Cauter et al., Diabetes 1992;41:368 (standard C-peptide kinetics)"
_CALIB_SECRETION = (
    "calibrated: basal ISR ≈ 35 pmol/min/m², first-phase peak ≈ 10× basal, second phase rising "
    "over 2 h at +6.9 mmol/L (physiology.md §3, §5.2)"
)


class BetaCell(AbstractSubmodel):
    """States: ATP fraction φ = ATP/(ATP+ADP) (–), readily releasable insulin R (pmol),
    amplifying (metabolic) signal A (–), plasma and peripheral C-peptide (pmol/L).

    J_GK = G^h/(S^h + G^h) · MgATP/(K_MgATP + MgATP)
    dφ/dt = k_φ · (c_ox·(J_GK + j_0)·(1 − φ) − φ)
    P_KATP = (b + x²)/(1 + x²) · 1/(1 + ATP/K_ATP),   x = MgADP/K_ADP
    V = E_K + (E_D − E_K)/(1 + ρ·P_KATP)
    c = 1/(1 + exp(−(V − V½)/s_V)) · 1/(1 + s_Ca·Mg_i/K_Ca)
    k_exo = k_max · c^n/(K_c^n + c^n)
    dR/dt = k_mob·(a_0 + A)·(β·R_max − R) − k_exo·R;   ISR = k_exo·R
    dA/dt = (J_GK − A)/τ_A
    dC1/dt = ISR/V_C − (k_1 + k_e)·C1 + k_2·C2;   dC2/dt = k_1·C1 − k_2·C2
    """

    name: ClassVar[str] = "beta_cell"
    state_names: ClassVar[tuple[str, ...]] = (
        "atp_fraction",
        "readily_releasable_insulin",
        "amplifying_signal",
        "c_peptide",
        "c_peptide_peripheral",
    )
    state_units: ClassVar[tuple[str, ...]] = ("-", "pmol", "-", "pmol/L", "pmol/L")

    beta_cell_mass: Any = parameter(
        1.0,
        "-",
        (0.05, 3.0),
        "functional beta-cell mass relative to the healthy reference",
        "reference = 1; T2DM presets from the ~30–50% deficit (physiology.md §3)",
    )
    gk_s05: Any = parameter(7.5, "mmol/L", (4.0, 12.0), "glucokinase half-saturation", _GK)
    gk_hill: Any = parameter(1.7, "-", (1.0, 2.5), "glucokinase Hill coefficient", _GK)
    gk_mgatp_km: Any = parameter(
        0.1,
        "mmol/L",
        (0.005, 3.0),
        "glucokinase Km for its co-substrate MgATP",
        "not found (physiology.md §9); 'physiological saturation with MgATP' (Diabetes "
        "2006;55:1713) → default well below cytosolic MgATP; fit to decide",
    )
    other_fuel_flux: Any = parameter(
        0.02,
        "-",
        (0.0, 0.3),
        "glucose-independent fuel flux (fatty and amino acids) j_0",
        "calibrated: keeps ATP/ADP > 1 at zero glucose",
        log_scale=False,
    )
    atp_production_gain: Any = parameter(
        12.0,
        "-",
        (2.0, 50.0),
        "ATP production / ATP consumption ratio c_ox per unit flux",
        "calibrated: ATP/ADP ≈ 4 at 5 mmol/L and ≈ 8 at 12 mmol/L glucose",
    )
    atp_turnover_rate: Any = parameter(
        0.5,
        "1/min",
        (0.1, 5.0),
        "relaxation rate of the ATP/ADP energy state k_φ",
        "beta-cell ATP/ADP follows glucose within ~1–2 min (assumed; islet imaging)",
    )
    adenine_nucleotides: Any = parameter(
        4.0,
        "mmol/L",
        (2.0, 8.0),
        "total cytosolic ATP + ADP in the beta-cell",
        "typical cytosolic adenine nucleotide pool 3–5 mM (assumed)",
    )
    mgatp_kd: Any = parameter(
        0.05,
        "mmol/L",
        (0.01, 0.5),
        "dissociation constant of MgATP",
        "standard complexation constant at pH 7.2 (assumed)",
    )
    mgadp_kd: Any = parameter(
        0.03,
        "mmol/L",
        (0.01, 3.0),
        "dissociation constant of MgADP",
        "MgADP binds Mg²⁺ ~10× weaker than MgATP (assumed)",
    )
    katp_atp_ki: Any = parameter(
        1.0,
        "mmol/L",
        (0.05, 10.0),
        "effective ATP inhibition constant of Kir6.2 in situ",
        "not found as a number (physiology.md §9); calibrated so KATP closes over 3–8 mM glucose",
    )
    katp_mgadp_k: Any = parameter(
        0.92,
        "mmol/L",
        (0.01, 3.0),
        "MgADP half-activation of SUR1 (two cooperative NBDs)",
        "MgADP stimulates via the two SUR1 NBDs (PMC22779; Magnus & Keizer-type two-site form); "
        "value calibrated with the secretion dose-response",
    )
    katp_basal_open: Any = parameter(
        0.08,
        "-",
        (0.0, 0.5),
        "KATP activity without MgADP relative to full SUR1 activation",
        "0.08 basal term of the Magnus & Keizer KATP model (Am J Physiol 1998;274:C1158)",
        log_scale=False,
    )
    katp_conductance_ratio: Any = parameter(
        23.4,
        "-",
        (1.0, 200.0),
        "maximal KATP conductance / depolarising background ρ",
        _CALIB_SECRETION,
    )
    potassium_reversal: Any = parameter(
        -75.0, "mV", (-90.0, -60.0), "K⁺ reversal potential E_K", "textbook", log_scale=False
    )
    depolarising_reversal: Any = parameter(
        -20.0,
        "mV",
        (-40.0, 0.0),
        "reversal potential of the depolarising background E_D",
        "non-selective cation background current (assumed)",
        log_scale=False,
    )
    cav_half_activation: Any = parameter(
        -38.9,
        "mV",
        (-60.0, -30.0),
        "burst-averaged half-activation of L-type Ca²⁺ entry",
        _CALIB_SECRETION,
        log_scale=False,
    )
    cav_slope: Any = parameter(
        5.0,
        "mV",
        (2.5, 10.0),
        "slope of L-type Ca²⁺ entry versus membrane potential",
        f"{_CALIB_SECRETION}; range: Boltzmann slope factors of beta-cell L-type currents "
        "≈ 4–9 mV (below 2.5 mV secretion switches like a step and the rest state is lost)",
    )
    cav_mg_kd: Any = parameter(
        0.65, "mmol/L", (0.1, 5.0), "intracellular Mg²⁺ inhibition constant of CaV1.2", _BRUNET
    )
    cav_mg_inhibition: Any = parameter(
        1.0,
        "-",
        (0.0, 5.0),
        "strength of Mg²⁺ inhibition of Ca²⁺ entry (0 = none, 1 = single site of CaV1.2)",
        f"{_BRUNET}; islet data (Gommers 2019; Cells 2023;12:1790) find low Mg²⁺ does not "
        "impair secretion",
        log_scale=False,
    )
    exocytosis_max_rate: Any = parameter(
        5.26,
        "1/min",
        (0.1, 20.0),
        "maximal fractional exocytosis rate of the RRP",
        _CALIB_SECRETION,
    )
    exocytosis_ca_k: Any = parameter(
        0.312, "-", (0.05, 1.0), "Ca²⁺ entry giving half-maximal exocytosis", _CALIB_SECRETION
    )
    incretin_gain: Any = parameter(
        INCRETIN_GAIN,
        "-",
        (0.0, 10.0),
        "amplification of exocytosis at full incretin (GLP-1/GIP) signal",
        "calibrated: oral glucose elicits ~2–3 × the insulin response of the same glycaemia "
        "given intravenously, the incretin effect (Nauck et al., J Clin Endocrinol Metab "
        "1986;63:492): the healthy OGTT's glucose curve replayed without incretin "
        "(`simulate_secretion`) gives 2.1 × less secretion (0–180 min, above basal); reduced "
        "in T2DM (Nauck et al., Diabetologia 1986;29:46); 75-g OGTT 2-h glucose < 7.8 mmol/L "
        "in normal glucose tolerance (WHO/ADA). The gain is large because the releasable pool "
        "limits secretion (GLP-1's action on granule refilling is not modelled)",
        log_scale=False,
    )
    exocytosis_ca_hill: Any = parameter(
        2.0,
        "-",
        (1.0, 5.0),
        "Ca²⁺ cooperativity of exocytosis",
        "synaptotagmin Ca²⁺ cooperativity 3–5 (textbook)",
    )
    rrp_capacity: Any = parameter(
        16000.0,
        "pmol",
        (1000.0, 60000.0),
        "insulin in the readily releasable pool when full",
        _CALIB_SECRETION,
    )
    mobilisation_rate: Any = parameter(
        0.07,
        "1/min",
        (0.01, 3.0),
        "granule mobilisation (pool refilling) rate constant",
        _CALIB_SECRETION,
    )
    mobilisation_basal: Any = parameter(
        0.05,
        "-",
        (0.0, 1.0),
        "glucose-independent mobilisation a_0",
        _CALIB_SECRETION,
        log_scale=False,
    )
    amplifying_time: Any = parameter(
        30.0,
        "min",
        (5.0, 120.0),
        "time constant of the metabolic amplifying signal τ_A",
        "second phase still rising at 2–3 h of hyperglycaemia (physiology.md §3)",
    )
    c_peptide_volume: Any = parameter(
        0.06, "L/kg", (0.03, 0.12), "C-peptide distribution volume V_C", _VANCAUTER
    )
    c_peptide_k1: Any = parameter(
        0.0515, "1/min", (0.01, 0.2), "C-peptide transfer plasma → periphery", _VANCAUTER
    )
    c_peptide_k2: Any = parameter(
        0.0499, "1/min", (0.01, 0.2), "C-peptide transfer periphery → plasma", _VANCAUTER
    )
    c_peptide_ke: Any = parameter(
        0.0600, "1/min", (0.01, 0.2), "C-peptide elimination from plasma", _VANCAUTER
    )

    # --- quasi-steady biochemistry and electrophysiology ---------------------------------
    def glucokinase_flux(self, glucose, atp_fraction, mg_free, xp) -> Any:
        """Normalised glucokinase flux J_GK (–): Hill in glucose × MgATP saturation."""
        mgatp = self.adenine_nucleotides * atp_fraction * mg_free / (self.mgatp_kd + mg_free)
        return hill(glucose, self.gk_s05, self.gk_hill, xp) * mgatp / (self.gk_mgatp_km + mgatp)

    def katp_open_probability(self, atp_fraction, mg_free) -> Any:
        """KATP activity (–): ATP inhibits Kir6.2, MgADP activates through SUR1."""
        atp = self.adenine_nucleotides * atp_fraction
        mgadp = (
            self.adenine_nucleotides * (1.0 - atp_fraction) * mg_free / (self.mgadp_kd + mg_free)
        )
        x2 = (mgadp / self.katp_mgadp_k) ** 2
        return (self.katp_basal_open + x2) / (1.0 + x2) / (1.0 + atp / self.katp_atp_ki)

    def membrane_potential(self, atp_fraction, mg_free) -> Any:
        """Burst-averaged membrane potential (mV) from the KATP / background balance."""
        p = self.katp_open_probability(atp_fraction, mg_free)
        return self.potassium_reversal + (self.depolarising_reversal - self.potassium_reversal) / (
            1.0 + self.katp_conductance_ratio * p
        )

    def calcium_entry(self, atp_fraction, mg_free, xp) -> Any:
        """Relative L-type Ca²⁺ entry c (–), inhibited by intracellular Mg²⁺."""
        v = self.membrane_potential(atp_fraction, mg_free)
        activation = 1.0 / (1.0 + xp.exp(-(v - self.cav_half_activation) / self.cav_slope))
        return activation / (1.0 + self.cav_mg_inhibition * mg_free / self.cav_mg_kd)

    def exocytosis_rate(self, atp_fraction, mg_free, xp) -> Any:
        """Fractional exocytosis rate of the readily releasable pool k_exo (1/min)."""
        c = self.calcium_entry(atp_fraction, mg_free, xp)
        return self.exocytosis_max_rate * hill(c, self.exocytosis_ca_k, self.exocytosis_ca_hill, xp)

    def secretion_rate(self, s, mg_free, xp) -> Any:
        """Pre-hepatic insulin secretion rate ISR (pmol/min)."""
        return (
            self.exocytosis_rate(s["atp_fraction"], mg_free, xp) * s["readily_releasable_insulin"]
        )

    def rates(self, s, *, glucokinase_flux, exocytosis_rate, body_weight) -> dict[str, Any]:
        """State derivatives, given the quasi-steady fluxes J_GK and k_exo of this state."""
        phi = s["atp_fraction"]
        pool = s["readily_releasable_insulin"]
        secretion = exocytosis_rate * pool
        d_phi = self.atp_turnover_rate * (
            self.atp_production_gain * (glucokinase_flux + self.other_fuel_flux) * (1.0 - phi) - phi
        )
        d_pool = (
            self.mobilisation_rate
            * (self.mobilisation_basal + s["amplifying_signal"])
            * (self.beta_cell_mass * self.rrp_capacity - pool)
            - secretion
        )
        d_amp = (glucokinase_flux - s["amplifying_signal"]) / self.amplifying_time
        c1 = s["c_peptide"]
        c2 = s["c_peptide_peripheral"]
        volume = self.c_peptide_volume * body_weight
        d_c1 = (
            secretion / volume
            - (self.c_peptide_k1 + self.c_peptide_ke) * c1
            + self.c_peptide_k2 * c2
        )
        d_c2 = self.c_peptide_k1 * c1 - self.c_peptide_k2 * c2
        return dict(
            atp_fraction=d_phi,
            readily_releasable_insulin=d_pool,
            amplifying_signal=d_amp,
            c_peptide=d_c1,
            c_peptide_peripheral=d_c2,
        )
