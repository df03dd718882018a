"""Joint recalibration of the presets on every simulated published number, and the
leave-one-study-out prediction of each trial's treatment effect.

The calibration moves *shared* mechanism parameters: each free parameter is multiplied by one
factor exp(uᵢ) in every preset at once, so the presets keep what makes them differ (their
`PRESET_CHANGES`) and the published numbers of every study inform the same mechanisms. The
objective is a MAP least squares problem: Σ ((prediction − published) / sd)² over the targets,
sd the between-subject SD of an arm mean or the standard error of a pooled effect
(`Target.sd`), plus a weak log-normal prior on each factor (the parameter's plausible range
spans ± 2 prior SD, as `mgjax.fit.range_priors`). Levenberg–Marquardt with forward-mode
Jacobians through every solve (one compiled program; a left-out study only sets its targets'
weights to 0, so every leave-one-study-out refit reuses it).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pandas as pd
from jaxtyping import Array, Float

from ..model import (
    Inputs,
    MgT2DModel,
    get_parameter,
    parameter_infos,
    preset,
    set_parameters,
)
from ..protocols import IVGTT, HyperinsulinemicClamp, OralMagnesiumTrial, fasting
from ..solve import SolverOptions, observables, simulate, steady_state
from ._catalogue import (
    ARM_OBSERVABLES,
    HEC_GROUPS,
    IVGTT_GROUPS,
    TRIAL_WEEKS,
    TRIALS,
    VISIT_WEEKS,
    Arm,
    Effect,
    Target,
    arm_readout,
    combination_matrix,
    effects,
    targets,
    trial_arms,
)

#: Parameters each preset may have its own factor for (none by default: a preset's own intake,
#: tried, is identified only by the study that uses the preset, so a left-out study's preset
#: drifts to its prior — de Valk's urinary effect came out × 5).
PRESET_CALIBRATED_PARAMETERS: tuple[str, ...] = ()
#: The shared mechanism parameters the calibration moves (one factor each, all presets).
CALIBRATED_PARAMETERS: tuple[str, ...] = (
    "receptor_mg_km",  # how much intracellular Mg²⁺ limits insulin signalling
    "receptor_mg_hill",  # how steeply
    "signalling_capacity",  # insulin sensitivity
    "egp_max",  # fasting glucose
    "beta_cell_mass",  # fasting insulin, first phase
    "glycation_rate",  # HbA1c per glucose
    "saturable_absorption_max",  # the serum rise with a supplement
    "endogenous_secretion_clearance",  # depletion on a low-Mg²⁺ diet
    "dct_capacity",  # urinary Mg²⁺
    "tal_mg_ec50",  # the renal set point of serum Mg²⁺
    "hyperglycaemia_tal_inhibition",  # glycosuria-independent hyperglycaemic wasting
)
DAY = 1440.0


@functools.cache
def _forward() -> SolverOptions:
    """Forward-mode sensitivities (built on first use: importing mgjax starts no backend)."""
    return SolverOptions(adjoint=dfx.ForwardMode())


def _scaled(model: MgT2DModel, names: Sequence[str], u: Float[Array, " p"]) -> MgT2DModel:
    """`model` with each parameter `names[i]` multiplied by exp(u[i])."""
    return set_parameters(
        model, {n: get_parameter(model, n) * jnp.exp(u[i]) for i, n in enumerate(names)}
    )


def _prior_sd(info, default) -> float:
    """Log-factor prior SD: the plausible range spans ± 2 SD; for a range starting at 0, the
    upper end lies 2 SD above the default."""
    if info.lower > 0:
        return math.log(info.upper / info.lower) / 4.0
    return math.log(info.upper / float(default)) / 2.0


def _stack(models: Sequence[MgT2DModel]) -> MgT2DModel:
    return jax.tree.map(lambda *x: jnp.stack(x), *models)


@dataclass(frozen=True)
class Readouts:
    """The readout names, in the order `readouts` returns them."""

    arms: tuple[Arm, ...]
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        names = [
            arm_readout(a, o, v)
            for a in self.arms
            for o in ARM_OBSERVABLES
            for v in range(len(VISIT_WEEKS))
        ]
        names += [f"hec/{p}/m_value" for p in HEC_GROUPS.values()]
        names += [f"ivgtt/{p}/air_g" for p in IVGTT_GROUPS.values()]
        names += ["rest/healthy/urinary_mg", "rest/healthy/fractional_mg_excretion"]
        names += ["depletion/serum_mg_fold_change", "depletion/free_mg_fold_change"]
        names += ["hyperglycaemic_kidney/urinary_mg_fold_change"]
        object.__setattr__(self, "names", tuple(names))


def study_presets(layout: Readouts) -> tuple[str, ...]:
    """The presets the studies simulate."""
    return tuple(dict.fromkeys([a.preset for a in layout.arms] + ["healthy", "prediabetes"]))


def readouts(
    u: Float[Array, " p"],
    names: Sequence[str],
    layout: Readouts,
    preset_names: Sequence[str] = (),
) -> tuple[Float[Array, " R"], Array]:
    """(every readout in `layout.names` order, all solves succeeded) with the shared
    parameters `names` scaled by exp(u[:len(names)]) in every preset, then each preset's own
    parameters `preset_names` by the next factors, preset by preset (`study_presets` order)."""
    shared = len(names)
    presets = {}
    for k, p in enumerate(study_presets(layout)):
        own = u[shared + k * len(preset_names) : shared + (k + 1) * len(preset_names)]
        presets[p] = _scaled(_scaled(preset(p), names, u[:shared]), preset_names, own)
    ok = []
    # every trial arm: 16 weeks of daily Mg²⁺ (their mean rate), fasting visits
    trial = OralMagnesiumTrial.daily(1.0, TRIAL_WEEKS, visit_weeks=VISIT_WEEKS, averaged=True)
    ts = trial.sampling_times()

    def arm(model, dose):
        protocol = eqx.tree_at(lambda t: t.dose, trial, dose)
        traj = simulate(model, protocol, ts, options=_forward(), throw=False)
        summary = protocol.summary(traj)
        return jnp.stack([summary[o] for o in ARM_OBSERVABLES]), traj.success

    models = _stack([presets[a.preset] for a in layout.arms])
    doses = jnp.asarray([a.dose_mmol for a in layout.arms])
    values, success = jax.vmap(arm)(models, doses)
    parts = [values.reshape(-1)]
    ok.append(jnp.all(success))

    def summary_of(protocol, key, group_presets):
        """`protocol.summary(...)[key]` of each preset, in one vmapped solve."""

        def one(model):
            traj = simulate(
                model, protocol, protocol.sampling_times(), options=_forward(), throw=False
            )
            return protocol.summary(traj)[key], traj.success

        value, success = jax.vmap(one)(_stack([presets[p] for p in group_presets]))
        parts.append(value)
        ok.append(jnp.all(success))

    # euglycaemic clamp (1 mU/kg/min, 5 mmol/L): M-values; IVGTT: acute insulin response
    clamp = HyperinsulinemicClamp(insulin_rate=1.0, per_kg=True, target_glucose=5.0)
    summary_of(clamp, "m_value", HEC_GROUPS.values())
    summary_of(IVGTT(), "air_g", IVGTT_GROUPS.values())

    # the healthy rest state; 3 weeks of < 1 mEq/day from it (Fatemi 1991)
    healthy = presets["healthy"]
    rest = steady_state(healthy, throw=False)
    at_rest = observables(healthy, rest)
    diet = set_parameters(healthy, {"dietary_mg_intake": 0.5})
    traj = simulate(
        diet, fasting(), jnp.asarray([0.0, 21 * DAY]), y0=rest, options=_forward(), throw=False
    )
    ok.append(traj.success)
    serum, free = traj["serum_mg"], traj["intracellular_mg"]
    # the kidney at the healthy rest, glucose 12.3 vs 5.3 mmol/L, no glycosuria (Djurhuus)
    f = healthy.fluxes(rest.y, Inputs.zeros(), jnp)

    def excretion(glucose):
        return healthy.renal_magnesium.excretion(
            ultrafiltrable=f["ultrafiltrable_mg"],
            ionized=f["ionized_mg"],
            mg_free=f["intracellular_mg"],
            insulin_signal=f["insulin_signal"],
            glucose=glucose,
            glycosuria=0.0,
            xp=jnp,
        )

    parts.append(
        jnp.stack(
            [
                at_rest["urinary_mg"],
                at_rest["fractional_mg_excretion"],
                serum[1] / serum[0],
                free[1] / free[0],
                excretion(12.3) / excretion(5.3),
            ]
        )
    )
    return jnp.concatenate(parts), jnp.all(jnp.stack(ok))


def is_outcome(target: Target) -> bool:
    """Whether a published number is a trial's outcome (measured after randomisation, or a
    pooled effect) rather than its baseline."""
    return not (target.time == 0.0 and target.arm in ("magnesium", "placebo"))


@dataclass
class Calibration:
    """A calibration's result: log-factors `u` (one per `parameters`), the predictions of every
    target and effect at them, whether the optimiser converged, steps and seconds."""

    parameters: tuple[str, ...]
    u: np.ndarray
    target_predictions: np.ndarray
    effect_predictions: np.ndarray
    converged: bool
    steps: int
    seconds: float
    excluded: tuple[str, ...] = ()

    def factors(self) -> dict[str, float]:
        return {n: float(np.exp(v)) for n, v in zip(self.parameters, self.u)}


class StudyCalibration:
    """The published studies as one least-squares problem over shared parameter factors.

    - `parameters`: the shared parameters moved (default `CALIBRATED_PARAMETERS`);
    - `preset_parameters`: parameters each preset gets its own factor for (default none);
    - `table`: the published numbers (default the bundled `published_targets.csv`);
    - `prior_scale`: `{parameter: k}` widens that factor's prior SD k-fold (sensitivity runs);
      the default prior SD puts the plausible range at ± 2 SD (`_prior_sd`).
    """

    def __init__(
        self,
        parameters: Sequence[str] = CALIBRATED_PARAMETERS,
        preset_parameters: Sequence[str] = PRESET_CALIBRATED_PARAMETERS,
        table: pd.DataFrame | None = None,
        prior_scale: dict[str, float] | None = None,
    ):
        self.shared = tuple(parameters)
        self.preset_parameters = tuple(preset_parameters)
        infos = parameter_infos()
        unknown = [p for p in self.shared + self.preset_parameters if p not in infos]
        if unknown:
            raise KeyError(f"unknown parameter(s) {unknown}; see mgjax.parameter_names()")
        self.layout = Readouts(trial_arms())
        self.presets = study_presets(self.layout)
        self.parameters = self.shared + tuple(
            f"{q}[{p}]" for p in self.presets for q in self.preset_parameters
        )
        healthy = preset("healthy")
        self.prior_sd = np.asarray(
            [_prior_sd(infos[q], get_parameter(healthy, q)) for q in self.shared]
            + [
                _prior_sd(infos[q], get_parameter(healthy, q))
                for _ in self.presets
                for q in self.preset_parameters
            ]
        )
        for name, scale in (prior_scale or {}).items():
            if name not in self.parameters:
                raise KeyError(f"prior_scale names {name!r}, which is not calibrated")
            self.prior_sd[self.parameters.index(name)] *= scale
        self.targets, self.not_simulated = targets(table)
        self.effects: list[Effect] = effects(table)
        names = list(self.layout.names)
        self._c_targets = jnp.asarray(combination_matrix([t.terms for t in self.targets], names))
        self._c_effects = jnp.asarray(combination_matrix([e.terms for e in self.effects], names))
        self._value = jnp.asarray([t.value for t in self.targets])
        self._sd = jnp.asarray([t.sd for t in self.targets])
        self._predict = jax.jit(self._predictions)
        self._solve = jax.jit(self._least_squares)

    @property
    def studies(self) -> tuple[str, ...]:
        """The studies with simulated targets."""
        return tuple(dict.fromkeys(t.study for t in self.targets))

    def _predictions(self, u):
        r, ok = readouts(u, self.shared, self.layout, self.preset_parameters)
        return self._c_targets @ r, self._c_effects @ r, ok

    def residuals(self, u, weights):
        """Weighted data residuals and the prior residuals (the LM objective's vector)."""
        predictions, _, _ = self._predictions(u)
        data = weights * (predictions - self._value) / self._sd
        return jnp.concatenate([data, u / jnp.asarray(self.prior_sd)])

    def _least_squares(self, u0, weights):
        solver = optx.LevenbergMarquardt(rtol=1e-6, atol=1e-6)
        sol = optx.least_squares(
            self.residuals,
            solver,
            u0,
            args=weights,
            options={"jac": "fwd"},
            max_steps=100,
            throw=False,
        )
        return sol.value, sol.result == optx.RESULTS.successful, sol.stats["num_steps"]

    def predict(self, u: Float[Array, " p"] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(target predictions, effect predictions) at log-factors `u` (default: the presets
        as shipped, u = 0)."""
        u = jnp.zeros(len(self.parameters)) if u is None else jnp.asarray(u)
        t, e, ok = self._predict(u)
        if not bool(ok):
            raise RuntimeError("a study simulation failed at these parameter factors")
        return np.asarray(t), np.asarray(e)

    def calibrate(self, exclude: Sequence[str] = ()) -> Calibration:
        """Fit the factors to every target except the outcomes of the studies `exclude`
        (`is_outcome`: every number after randomisation; the baseline stays, as it describes
        the population before the trial), starting from the presets as shipped (u = 0)."""
        unknown = sorted(set(exclude) - set(self.studies))
        if unknown:
            raise KeyError(f"unknown study(ies) {unknown}; studies: {', '.join(self.studies)}")
        weights = jnp.asarray(
            [0.0 if t.study in exclude and is_outcome(t) else 1.0 for t in self.targets]
        )
        start = time.perf_counter()
        u, converged, steps = self._solve(jnp.zeros(len(self.parameters)), weights)
        u.block_until_ready()
        seconds = time.perf_counter() - start
        t, e = self.predict(u)
        return Calibration(
            self.parameters,
            np.asarray(u),
            t,
            e,
            bool(converged),
            int(steps),
            seconds,
            tuple(exclude),
        )

    # --- tables -------------------------------------------------------------------------------
    def calibration_table(self, calibration: Calibration) -> pd.DataFrame:
        """Every simulated published number beside the shipped presets' and the calibrated
        prediction, and whether each lies within the reported spread."""
        shipped, _ = self.predict()
        rows = []
        for t, p0, p1 in zip(self.targets, shipped, calibration.target_predictions):
            judged = not math.isnan(t.spread)
            rows.append(
                dict(
                    study=t.study,
                    arm=t.arm,
                    time=t.time,
                    time_unit=t.time_unit,
                    observable=t.observable,
                    published=t.value,
                    spread=t.spread,
                    spread_kind=t.spread_kind,
                    unit=t.unit,
                    shipped=p0,
                    calibrated=p1,
                    within_shipped=bool(abs(p0 - t.value) <= t.spread) if judged else None,
                    within_calibrated=bool(abs(p1 - t.value) <= t.spread) if judged else None,
                )
            )
        return pd.DataFrame(rows)

    def effect_table(self, predictions: dict[str, np.ndarray]) -> pd.DataFrame:
        """The published effects beside each set of predicted effects (`{label: values}`),
        with within-spread and the ratio predicted / published per set; `established`: the
        published 95 % interval excludes 0 (the ratios that say whether effects are halved or
        doubled)."""
        rows = []
        for i, e in enumerate(self.effects):
            row = dict(
                study=e.study,
                outcome=e.observable,
                kind=e.kind,
                published=e.published,
                spread_95=e.spread,
                established=abs(e.published) > e.spread,  # the 95 % interval excludes 0
            )
            for label, values in predictions.items():
                p = float(values[i])
                row[label] = p
                row[f"within_{label}"] = bool(abs(p - e.published) <= e.spread)
                null = e.published == 0.0  # no published effect: no ratio
                row[f"ratio_{label}"] = float("nan") if null else p / e.published
            rows.append(row)
        return pd.DataFrame(rows)

    def leave_one_study_out(
        self, studies: Sequence[str] | None = None, full: Calibration | None = None
    ) -> pd.DataFrame:
        """For each supplementation study, recalibrate without its targets and predict its
        effects; returns `effect_table` with columns `loso` (left-out prediction), `all`
        (calibration on everything: `full` when already computed) and `shipped`, plus the
        refits' convergence."""
        studies = [t.study for t in TRIALS] if studies is None else list(studies)
        full = self.calibrate() if full is None else full
        _, shipped = self.predict()
        loso = np.full(len(self.effects), np.nan)
        converged = {}
        for study in studies:
            fit = self.calibrate(exclude=(study,))
            converged[study] = fit.converged
            for i, e in enumerate(self.effects):
                if e.study == study:
                    loso[i] = fit.effect_predictions[i]
        table = self.effect_table(
            {"loso": loso, "all": full.effect_predictions, "shipped": shipped}
        )
        table["refit_converged"] = [converged.get(e.study) for e in self.effects]
        return table
