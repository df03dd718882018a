"""Whole-body Mg²⁺ pools: extracellular (serum) Mg²⁺ with its ionised and ultrafiltrable
fractions, the exchangeable intracellular pool (free cytosolic Mg²⁺ by linear buffering), and
the slowly exchanging bone-surface pool.

Insulin stimulates cellular Mg²⁺ uptake (the post-receptor insulin signal S raises influx), so
insulin resistance also lowers intracellular Mg²⁺ — a second arc of the vicious circle.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import AbstractSubmodel
from ._parameter import parameter

_BB = "Boron & Boulpaep, Medical Physiology 3rd ed., Table 36-8"
_AVIOLI = "Avioli & Berman, J Appl Physiol 1966;21:1688 (28Mg compartmental analysis)"


class MagnesiumPools(AbstractSubmodel):
    """States: extracellular Mg²⁺ M_ecf, exchangeable intracellular M_ic and exchangeable bone
    M_bone (mmol each).

    serum total S = M_ecf/(V_ecf·W);  ionised S_ion = f_ion·S;  ultrafiltrable S_uf = f_uf·S
    free cytosolic Mg_i = M_ic/(V_buf·W)
    J_ic = CL_ic·W·(ρ_0·(1 + g_ins·S_insulin)·S_ion − Mg_i)
    J_bone = CL_bone·W·S_ion − k_bone·M_bone
    dM_ecf/dt = J_abs − J_sec + IV Mg²⁺ − J_ic − J_bone − U_Mg   (J_sec: gut secretion)
    """

    name: ClassVar[str] = "magnesium_pools"
    state_names: ClassVar[tuple[str, ...]] = ("ecf_mg", "intracellular_mg_pool", "bone_mg")
    state_units: ClassVar[tuple[str, ...]] = ("mmol", "mmol", "mmol")

    ecf_volume: Any = parameter(
        0.2,
        "L/kg",
        (0.1, 0.5),
        "extracellular distribution volume of Mg²⁺ V_ecf",
        "IV MgSO₄ popPK: V 15.6 L (Salinger 2013), 13.3 L (da Silva 2020), Vc 24 L (Lu 2002)",
    )
    ionized_fraction: Any = parameter(
        0.62, "-", (0.5, 0.75), "ionised fraction of serum Mg²⁺ f_ion", f"{_BB}: 0.56 of 0.90 mM"
    )
    ultrafiltrable_fraction: Any = parameter(
        0.69,
        "-",
        (0.6, 0.85),
        "ultrafiltrable (ionised + complexed) fraction f_uf",
        f"{_BB}: 62% + 7%; 70–80% in renal texts",
    )
    intracellular_buffer_volume: Any = parameter(
        2.8,
        "L/kg",
        (0.5, 10.0),
        "apparent volume of free cytosolic Mg²⁺ (exchangeable intracellular Mg / free Mg²⁺)",
        f"{_AVIOLI}: exchangeable Mg 1.77 mmol/kg, >80% intracellular; free Mg²⁺ 0.5 mM "
        "(physiology.md §1.2) → 1.4/0.5 L/kg",
    )
    intracellular_exchange_clearance: Any = parameter(
        0.0013,
        "L/kg/min",
        (0.0001, 0.02),
        "clearance of Mg²⁺ exchange between cells and ECF",
        "calibrated: intracellular exchange time ≈ 36 h (28Mg: 10–25% equilibrated at 40–60 h; "
        "urinary component t½ 14–35 h)",
    )
    intracellular_to_ionized_ratio: Any = parameter(
        0.88,
        "-",
        (0.3, 2.0),
        "free cytosolic / serum ionised Mg²⁺ ratio ρ_0 maintained by transport without insulin",
        "calibrated: free Mg²⁺ ≈ 0.5 mM at serum ionised ≈ 0.53 mM (physiology.md §1.2)",
    )
    insulin_mg_uptake_gain: Any = parameter(
        1.0,
        "-",
        (0.0, 10.0),
        "stimulation of cellular Mg²⁺ uptake per unit insulin signal",
        "insulin drives Mg²⁺ into cells (Paolisso et al. 1986; Barbagallo & Dominguez); "
        "size not found — fit to decide",
        log_scale=False,
    )
    bone_uptake_clearance: Any = parameter(
        5.2e-5,
        "L/kg/min",
        (1e-6, 1e-3),
        "clearance of ionised Mg²⁺ onto the bone surface",
        "calibrated: exchangeable bone-surface Mg ≈ 1/3 of bone Mg (≈2.4 mmol/kg) at ionised "
        "0.53 mM (physiology.md §1.2)",
    )
    bone_release_rate: Any = parameter(
        1.155e-5,
        "1/min",
        (1e-6, 1e-4),
        "release rate of exchangeable bone Mg²⁺",
        f"{_AVIOLI}: slow pool t½ ≈ 1,000 h",
    )

    def serum_total(self, s, body_weight) -> Any:
        """Total serum Mg²⁺ (mmol/L)."""
        return s["ecf_mg"] / (self.ecf_volume * body_weight)

    def intracellular_free(self, s, body_weight) -> Any:
        """Free cytosolic Mg²⁺ Mg_i (mmol/L)."""
        return s["intracellular_mg_pool"] / (self.intracellular_buffer_volume * body_weight)

    def cellular_uptake(self, ionized, mg_free, insulin_signal, body_weight) -> Any:
        """Net Mg²⁺ flux from ECF into cells J_ic (mmol/min)."""
        return (
            self.intracellular_exchange_clearance
            * body_weight
            * (
                self.intracellular_to_ionized_ratio
                * (1.0 + self.insulin_mg_uptake_gain * insulin_signal)
                * ionized
                - mg_free
            )
        )

    def bone_uptake(self, s, ionized, body_weight) -> Any:
        """Net Mg²⁺ flux from ECF onto bone J_bone (mmol/min)."""
        return (
            self.bone_uptake_clearance * body_weight * ionized
            - self.bone_release_rate * s["bone_mg"]
        )

    def rates(
        self, *, absorption, iv_mg, cellular_uptake, bone_uptake, urinary_mg
    ) -> dict[str, Any]:
        return dict(
            ecf_mg=absorption + iv_mg - cellular_uptake - bone_uptake - urinary_mg,
            intracellular_mg_pool=cellular_uptake,
            bone_mg=bone_uptake,
        )
