"""The coupled Mg²⁺–glucose–insulin model: the submodels assembled into one vector field.

The vicious circle is not written anywhere as such; it emerges from the couplings:

- serum Mg²⁺ → (cellular exchange) → intracellular free Mg²⁺ → insulin-receptor
  autophosphorylation → GLUT4 uptake → plasma glucose and insulin;
- intracellular Mg²⁺ → beta-cell (glucokinase MgATP, KATP via MgADP, L-type Ca²⁺ channels);
- insulin signal → renal TRPM6 → urinary Mg²⁺ → serum Mg²⁺;
- insulin signal → cellular Mg²⁺ uptake → intracellular Mg²⁺;
- daily-mean glucose → glycosuria → TAL Mg²⁺ wasting;  daily-mean glucose → HbA1c.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx

from ._base import AbstractSubmodel
from ._beta_cell import BetaCell
from ._glucose_insulin import GlucoseInsulin
from ._glycation import Glycation
from ._inputs import Inputs
from ._insulin_signalling import InsulinSignalling
from ._intestinal_magnesium import IntestinalMagnesium
from ._magnesium_pools import MagnesiumPools
from ._parameter import ParameterInfo
from ._renal_magnesium import RenalMagnesium

#: Bookkeeping states that integrate fluxes for mass balance and 24-h collections. They feed
#: back on nothing and have no steady state.
ACCUMULATOR_STATES: tuple[str, ...] = ("absorbed_mg_cumulative", "urinary_mg_cumulative")

#: 1 µU/mL of insulin in pmol/L (the convention of the glucose–insulin simulators, physiology.md).
PMOL_PER_MICROUNIT = 6.0
#: pmol of insulin in 1 mU (1 mU = 1000 µU; 1 µU/mL = 6 pmol/L ⇒ 1 mU = 6 pmol, 1 U = 6 nmol).
PMOL_PER_MILLIUNIT = 6.0
#: mg of glucose per mmol.
GLUCOSE_MG_PER_MMOL = 180.156


class MgT2DModel(eqx.Module):
    """The coupled model. Its fields are the submodels, each holding its own parameters, so a
    `MgT2DModel` *is* the parameter PyTree: `jax.grad` with respect to it gives a gradient for
    every parameter, and `mgjax.preset` returns one.

    States are carried as one flat float64 vector in the order of `state_names()`; the vector
    field and the observables unpack it by name.
    """

    glucose_insulin: GlucoseInsulin = eqx.field(default_factory=GlucoseInsulin)
    insulin_signalling: InsulinSignalling = eqx.field(default_factory=InsulinSignalling)
    beta_cell: BetaCell = eqx.field(default_factory=BetaCell)
    intestinal_magnesium: IntestinalMagnesium = eqx.field(default_factory=IntestinalMagnesium)
    magnesium_pools: MagnesiumPools = eqx.field(default_factory=MagnesiumPools)
    renal_magnesium: RenalMagnesium = eqx.field(default_factory=RenalMagnesium)
    glycation: Glycation = eqx.field(default_factory=Glycation)

    submodel_classes: ClassVar[dict[str, type[AbstractSubmodel]]] = {
        "glucose_insulin": GlucoseInsulin,
        "insulin_signalling": InsulinSignalling,
        "beta_cell": BetaCell,
        "intestinal_magnesium": IntestinalMagnesium,
        "magnesium_pools": MagnesiumPools,
        "renal_magnesium": RenalMagnesium,
        "glycation": Glycation,
    }

    # --- layout --------------------------------------------------------------------------
    def submodels(self) -> list[AbstractSubmodel]:
        return [getattr(self, n) for n in self.submodel_classes]

    @classmethod
    def dynamic_state_names(cls) -> tuple[str, ...]:
        """States with a steady state (everything but the accumulators)."""
        return tuple(n for c in cls.submodel_classes.values() for n in c.state_names)

    @classmethod
    def state_names(cls) -> tuple[str, ...]:
        return cls.dynamic_state_names() + ACCUMULATOR_STATES

    @classmethod
    def state_units(cls) -> tuple[str, ...]:
        units = tuple(u for c in cls.submodel_classes.values() for u in c.state_units)
        return units + ("mmol",) * len(ACCUMULATOR_STATES)

    @classmethod
    def parameter_infos(cls) -> list[ParameterInfo]:
        return [i for c in cls.submodel_classes.values() for i in c.parameter_infos()]

    def unpack(self, y) -> dict[str, Any]:
        return {name: y[i] for i, name in enumerate(self.state_names())}

    # --- physiology ---------------------------------------------------------------------
    def fluxes(self, y, inputs: Inputs, xp) -> dict[str, Any]:
        """Every algebraic quantity of the coupled system at state `y` (a flat vector), in
        model units: concentrations mmol/L or pmol/L, fluxes per minute."""
        s = self.unpack(y)
        gi, sig, beta = self.glucose_insulin, self.insulin_signalling, self.beta_cell
        gut, pools, kidney = self.intestinal_magnesium, self.magnesium_pools, self.renal_magnesium
        weight = gi.body_weight

        serum = pools.serum_total(s, weight)
        ionized = pools.ionized_fraction * serum
        ultrafiltrable = pools.ultrafiltrable_fraction * serum
        mg_free = pools.intracellular_free(s, weight)

        glucokinase_flux = beta.glucokinase_flux(s["glucose"], s["atp_fraction"], mg_free, xp)
        exocytosis_rate = beta.exocytosis_rate(s["atp_fraction"], mg_free, xp) * (
            1.0 + beta.incretin_gain * inputs.incretin
        )
        secretion = exocytosis_rate * s["readily_releasable_insulin"]
        insulin_signal = sig.signal(s["insulin"], mg_free)
        egp = gi.endogenous_glucose_production(s["glucose"], s["hepatic_insulin"], xp)
        uptake_ii = gi.insulin_independent_uptake(s["glucose"])
        uptake_id = sig.insulin_dependent_uptake(s["glucose"], s["glut4_activity"], weight)
        glycosuria = gi.renal_glucose_excretion(s["glucose"], xp)
        daily_mean_glucose = gi.daily_mean_glucose(s["glucose"])
        daily_glycosuria = gi.renal_glucose_excretion(daily_mean_glucose, xp)

        absorption = gut.absorption(s["gut_mg"])
        secretion_mg = gut.endogenous_secretion(ionized)
        cellular = pools.cellular_uptake(ionized, mg_free, insulin_signal, weight)
        bone = pools.bone_uptake(s, ionized, weight)
        urinary = kidney.excretion(
            ultrafiltrable=ultrafiltrable,
            ionized=ionized,
            mg_free=mg_free,
            insulin_signal=insulin_signal,
            glucose=s["glucose"],
            glycosuria=daily_glycosuria,
            xp=xp,
        )
        return dict(
            state=s,
            serum_mg=serum,
            ionized_mg=ionized,
            ultrafiltrable_mg=ultrafiltrable,
            intracellular_mg=mg_free,
            secretion=secretion,
            glucokinase_flux=glucokinase_flux,
            exocytosis_rate=exocytosis_rate,
            insulin_signal=insulin_signal,
            egp=egp,
            uptake_insulin_independent=uptake_ii,
            uptake_insulin_dependent=uptake_id,
            glycosuria=glycosuria,
            daily_mean_glucose=daily_mean_glucose,
            mg_absorption=absorption,
            mg_secretion=secretion_mg,
            mg_cellular_uptake=cellular,
            mg_bone_uptake=bone,
            mg_urinary=urinary,
            mg_filtered=kidney.filtered_load(ultrafiltrable),
        )

    def rates(self, y, inputs: Inputs, xp):
        """dy/dt as a flat vector (units of each state per minute)."""
        f = self.fluxes(y, inputs, xp)
        s = f["state"]
        gi = self.glucose_insulin
        d: dict[str, Any] = {}
        d.update(
            gi.rates(
                s,
                egp=f["egp"],
                uptake_ii=f["uptake_insulin_independent"],
                uptake_id=f["uptake_insulin_dependent"],
                glycosuria=f["glycosuria"],
                glucose_infusion=inputs.glucose_infusion,
                secretion=f["secretion"],
                insulin_infusion=inputs.insulin_infusion,
            )
        )
        d.update(self.insulin_signalling.rates(s, signal=f["insulin_signal"]))
        d.update(
            self.beta_cell.rates(
                s,
                glucokinase_flux=f["glucokinase_flux"],
                exocytosis_rate=f["exocytosis_rate"],
                body_weight=gi.body_weight,
            )
        )
        d.update(
            self.intestinal_magnesium.rates(s, oral_mg=inputs.oral_mg, secretion=f["mg_secretion"])
        )
        d.update(
            self.magnesium_pools.rates(
                absorption=f["mg_absorption"] - f["mg_secretion"],
                iv_mg=inputs.iv_mg,
                cellular_uptake=f["mg_cellular_uptake"],
                bone_uptake=f["mg_bone_uptake"],
                urinary_mg=f["mg_urinary"],
            )
        )
        d.update(self.glycation.rates(s, daily_mean_glucose=f["daily_mean_glucose"]))
        d["absorbed_mg_cumulative"] = f["mg_absorption"] - f["mg_secretion"] + inputs.iv_mg
        d["urinary_mg_cumulative"] = f["mg_urinary"]
        return xp.stack([d[n] for n in self.state_names()])

    def dynamic_rates(self, y_dynamic, inputs: Inputs, xp):
        """dy/dt of the dynamic (non-accumulator) states, with accumulators at zero."""
        y = xp.concatenate([y_dynamic, xp.zeros(len(ACCUMULATOR_STATES), dtype=y_dynamic.dtype)])
        return self.rates(y, inputs, xp)[: len(self.dynamic_state_names())]

    # --- clinical observables ----------------------------------------------------------
    def observables(self, y, inputs: Inputs, xp) -> dict[str, Any]:
        """What clinicians measure, in SI-clinical units (see `OBSERVABLE_UNITS`)."""
        f = self.fluxes(y, inputs, xp)
        s = f["state"]
        gi = self.glucose_insulin
        weight = gi.body_weight
        glucose = s["glucose"]
        insulin = s["insulin"]
        mg_per_kg = GLUCOSE_MG_PER_MMOL / weight
        exchangeable = s["ecf_mg"] + s["intracellular_mg_pool"] + s["bone_mg"]
        return dict(
            glucose=glucose,
            insulin=insulin,
            c_peptide=s["c_peptide"],
            serum_mg=f["serum_mg"],
            ionized_mg=f["ionized_mg"],
            intracellular_mg=f["intracellular_mg"],
            urinary_mg=f["mg_urinary"] * 1440.0,
            fractional_mg_excretion=100.0 * f["mg_urinary"] / f["mg_filtered"],
            mg_absorption=(f["mg_absorption"] - f["mg_secretion"]) * 1440.0,
            homa_ir=glucose * (insulin / PMOL_PER_MICROUNIT) / 22.5,
            hba1c=self.glycation.hba1c(s, xp),
            insulin_secretion=f["secretion"],
            egp=f["egp"] * mg_per_kg,
            glucose_uptake=(f["uptake_insulin_independent"] + f["uptake_insulin_dependent"])
            * mg_per_kg,
            glycosuria=f["glycosuria"] * GLUCOSE_MG_PER_MMOL * 1440.0 / 1000.0,
            insulin_signal=f["insulin_signal"],
            glut4_activity=s["glut4_activity"],
            trpm6_activity=self.renal_magnesium.trpm6_activity(
                f["insulin_signal"], f["intracellular_mg"], xp
            ),
            membrane_potential=self.beta_cell.membrane_potential(
                s["atp_fraction"], f["intracellular_mg"]
            ),
            exchangeable_body_mg=exchangeable,
            absorbed_mg_cumulative=s["absorbed_mg_cumulative"],
            urinary_mg_cumulative=s["urinary_mg_cumulative"],
            glucose_infusion=inputs.glucose_infusion * mg_per_kg * xp.ones_like(glucose),
            insulin_infusion=inputs.insulin_infusion * xp.ones_like(glucose),
        )


#: Units of every observable returned by `MgT2DModel.observables`.
OBSERVABLE_UNITS: dict[str, str] = dict(
    glucose="mmol/L",
    insulin="pmol/L",
    c_peptide="pmol/L",
    serum_mg="mmol/L",
    ionized_mg="mmol/L",
    intracellular_mg="mmol/L",
    urinary_mg="mmol/day",
    fractional_mg_excretion="%",
    mg_absorption="mmol/day",
    homa_ir="1",
    hba1c="%",
    insulin_secretion="pmol/min",
    egp="mg/kg/min",
    glucose_uptake="mg/kg/min",
    glycosuria="g/day",
    insulin_signal="1",
    glut4_activity="1",
    trpm6_activity="1",
    membrane_potential="mV",
    exchangeable_body_mg="mmol",
    absorbed_mg_cumulative="mmol",
    urinary_mg_cumulative="mmol",
    glucose_infusion="mg/kg/min",
    insulin_infusion="pmol/min",
)
