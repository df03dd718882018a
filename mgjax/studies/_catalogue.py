"""The published studies as simulations: which preset and protocol stand for each study's
population and design, how each published number (`mgjax/data/published_targets.csv`) is read
from the simulations, and each trial's treatment effect.

Every published row is either *simulated* (a `Target`: a linear combination of named readouts)
or *not simulated*, with the reason (`NOT_SIMULATED`). Readouts are scalars computed in one
differentiable function (`_calibration.readouts`): the fasting visits of every trial arm, the
M-values of the euglycaemic clamp, the IVGTT's acute insulin response, the healthy rest state,
the Fatemi depletion and the Djurhuus hyperglycaemic kidney.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data._published import published_targets

#: mmol of elemental Mg²⁺ in 2.5 g MgCl₂ (637 mg Mg, physiology.md §6).
MGCL2_2_5_G_MMOL = 637.0 / 24.305
#: Weeks simulated for every trial arm; each study reads its own visits.
TRIAL_WEEKS = 16
#: Visits of every simulated arm (weeks): 3 months is read at week 13.
VISIT_WEEKS = (0, 12, 13, 16)
#: The readouts of a trial arm at each visit (keys of `OralMagnesiumTrial.summary`).
ARM_OBSERVABLES = ("serum_mg", "glucose", "homa_ir", "hba1c", "urinary_mg_24h")
#: Published observable name → the trial summary's.
_PUBLISHED_TO_SUMMARY = {
    "fasting_glucose": "glucose",
    "serum_mg": "serum_mg",
    "homa_ir": "homa_ir",
    "hba1c": "hba1c",
    "urinary_mg_24h": "urinary_mg_24h",
}


@dataclass(frozen=True)
class Arm:
    """One simulated trial arm: a preset given `dose_mmol` elemental Mg²⁺ a day."""

    preset: str
    dose_mmol: float


@dataclass(frozen=True)
class TrialDesign:
    """How a supplementation study is simulated: its population's preset, the daily elemental
    Mg²⁺ dose (mmol) of the active arm, and why that preset stands for its population."""

    study: str
    preset: str
    dose_mmol: float
    rationale: str


#: The supplementation studies (arm-level trials and meta-analyses). Salts are absorbed as the
#: chloride (`SALT_BIOAVAILABILITY` 1 for every salt used here: chloride, aspartate, sulfate
#: and unstated organic salts; sulfate is not in the table — taken as an inorganic soluble
#: salt like the chloride).
TRIALS: tuple[TrialDesign, ...] = (
    TrialDesign(
        "rodriguez_moran_2003",
        "t2dm_hypomagnesemia",
        MGCL2_2_5_G_MMOL,
        "T2DM with serum Mg ≤ 0.74 mmol/L, poorly controlled (FPG 12.8–14.2 mmol/L)",
    ),
    TrialDesign(
        "de_valk_1998",
        "t2dm_insulin",
        15.0,
        "insulin-requiring T2DM",
    ),
    TrialDesign(
        "guerrero_romero_2004",
        "ir_hypomagnesemia",
        MGCL2_2_5_G_MMOL,
        "non-diabetic, insulin-resistant, serum Mg ≤ 0.74 mmol/L",
    ),
    TrialDesign(
        "solati_2014",
        "t2dm",
        300.0 / 24.305,
        "T2DM (FPG 10.2–10.9 mmol/L), serum Mg not an inclusion criterion",
    ),
    TrialDesign(
        "de_souza_e_silva_2014",
        "prediabetes",
        400.0 / 24.305,
        "metabolic syndrome without diabetes, mostly normomagnesaemic: insulin-resistant, "
        "normoglycaemic to impaired fasting glucose",
    ),
    TrialDesign(
        "song_2006_meta",
        "t2dm",
        15.0,
        "meta-analysis of T2DM trials at a median 15 mmol/day for a median 12 weeks",
    ),
    TrialDesign(
        "simental_mendia_2016_meta",
        "t2dm",
        15.0,
        "meta-analysis of trials with and without diabetes (t2dm stands for the pool); 15 "
        "mmol/day for 12 weeks",
    ),
)
TRIAL_BY_STUDY = {t.study: t for t in TRIALS}

#: Published rows not simulated, with the reason (study → reason; or (study, observable)).
NOT_SIMULATED: dict[str | tuple[str, str], str] = {
    ("minimal_model_review", "si"): "S_I is a minimal-model fit to an FSIVGTT, not a model "
    "observable (no minimal-model fit of the simulated IVGTT is made)",
    ("minimal_model_review", "sg"): "S_G is a minimal-model fit to an FSIVGTT, not a model "
    "observable",
    "lu_2002_mgso4_pk": "two-compartment popPK parameters of IV MgSO₄ in pre-eclamptic "
    "women: another population and model structure, not an observable",
    "fine_1991_absorption": "single-meal balance study; the meal's own Mg²⁺ content is not "
    "in the sources at hand (physiology.md §9), so the intake the 65 % refers to is unknown",
}


@dataclass(frozen=True)
class Target:
    """One simulated published number: `sum(c * readout[name] for c, name in terms)`."""

    row: int
    study: str
    arm: str
    observable: str
    time: float
    time_unit: str
    value: float
    spread: float
    spread_kind: str
    n: float
    unit: str
    terms: tuple[tuple[float, str], ...]

    @property
    def sd(self) -> float:
        """The scale of this number's residual in the calibration: the between-subject SD for
        arm means (SEM × √n where a SEM is reported), the standard error for an effect (95 %
        CI half-width / 1.96), 20 % of the value where no spread is reported."""
        kind = self.spread_kind.lower()
        if math.isnan(self.spread):
            return 0.2 * abs(self.value)
        if "ci" in kind:
            return self.spread / 1.96
        if kind.startswith("sem") and not math.isnan(self.n):
            return self.spread * math.sqrt(self.n)
        return self.spread


def visit_index(time: float, unit: str) -> int:
    """The index into `VISIT_WEEKS` of a published visit time (weeks or months)."""
    weeks = {"week": time, "month": round(time * 13.0 / 3.0)}[unit]
    if weeks not in VISIT_WEEKS:
        raise KeyError(f"no simulated visit at {time:g} {unit}; visits: {VISIT_WEEKS} weeks")
    return VISIT_WEEKS.index(weeks)


def arm_key(arm: Arm) -> str:
    return f"{arm.preset}@{arm.dose_mmol:.4f}"


def trial_arms() -> tuple[Arm, ...]:
    """The distinct simulated arms: each trial's active and placebo arm, and the placebo arms
    of the presets whose rest states are published (healthy, t2dm)."""
    arms = []
    for t in TRIALS:
        arms += [Arm(t.preset, t.dose_mmol), Arm(t.preset, 0.0)]
    arms += [Arm("healthy", 0.0), Arm("t2dm", 0.0)]
    return tuple(dict.fromkeys(arms))


def arm_readout(arm: Arm, observable: str, visit: int) -> str:
    return f"trial/{arm_key(arm)}/{observable}/{visit}"


#: The M-value clamp's presets (published group → preset).
HEC_GROUPS = {"ngt": "healthy", "igt": "prediabetes", "t2dm": "t2dm"}
#: The IVGTT's presets (published group → preset).
IVGTT_GROUPS = {"normal": "healthy", "t2dm": "t2dm"}


def _terms_for(row: pd.Series) -> tuple[tuple[float, str], ...] | None:
    """The readout combination a published row is, or None when it is not simulated."""
    study, arm, obs = row["study"], row["arm"], row["observable"]
    if study in NOT_SIMULATED or (study, obs) in NOT_SIMULATED:
        return None
    if study in TRIAL_BY_STUDY:
        design = TRIAL_BY_STUDY[study]
        summary = _PUBLISHED_TO_SUMMARY[obs]
        v = visit_index(float(row["time"]), row["time_unit"])
        active, placebo = Arm(design.preset, design.dose_mmol), Arm(design.preset, 0.0)
        if arm == "effect":  # a meta-analysis' pooled difference at the end
            return (
                (1.0, arm_readout(active, summary, v)),
                (-1.0, arm_readout(placebo, summary, v)),
            )
        chosen = {"magnesium": active, "placebo": placebo}[arm]
        return ((1.0, arm_readout(chosen, summary, v)),)
    if study == "diabetes_2001_50_1449":
        return ((1.0, f"hec/{HEC_GROUPS[arm]}/m_value"),)
    if study == "minimal_model_review":
        return ((1.0, f"ivgtt/{IVGTT_GROUPS[arm]}/{obs}"),)
    if study == "lubeck_2000_controls":
        name = {"urinary_mg_24h": "urinary_mg", "fe_mg": "fractional_mg_excretion"}[obs]
        return ((1.0, f"rest/healthy/{name}"),)
    if study == "kurstjens_2017":
        return ((1.0, arm_readout(Arm("t2dm", 0.0), "serum_mg", 0)),)
    if study == "fatemi_1991_depletion":
        return ((1.0, f"depletion/{obs}"),)
    if study == "djurhuus_2000_hyperglycaemia":
        return ((1.0, "hyperglycaemic_kidney/urinary_mg_fold_change"),)
    raise KeyError(
        f"published study {study!r} (row: {arm}/{obs}) has no simulation in "
        "mgjax.studies; add it to the catalogue or to NOT_SIMULATED with the reason"
    )


def _float(x) -> float:
    return float("nan") if pd.isna(x) else float(x)


def targets(table: pd.DataFrame | None = None) -> tuple[list[Target], pd.DataFrame]:
    """(the simulated published numbers, the rows not simulated with their reason)."""
    table = published_targets() if table is None else table
    out, skipped = [], []
    for i, row in table.iterrows():
        terms = _terms_for(row)
        if terms is None:
            reason = NOT_SIMULATED.get((row["study"], row["observable"])) or NOT_SIMULATED.get(
                row["study"]
            )
            skipped.append({**row.to_dict(), "reason": reason})
            continue
        out.append(
            Target(
                row=int(i),
                study=row["study"],
                arm=row["arm"],
                observable=row["observable"],
                time=_float(row["time"]),
                time_unit="" if pd.isna(row["time_unit"]) else row["time_unit"],
                value=float(row["value"]),
                spread=_float(row["spread"]),
                spread_kind="" if pd.isna(row["spread_kind"]) else str(row["spread_kind"]),
                n=_float(row["n"]),
                unit=row["unit"],
                terms=terms,
            )
        )
    return out, pd.DataFrame(skipped)


# --- treatment effects --------------------------------------------------------------------------
@dataclass(frozen=True)
class Effect:
    """A published treatment effect: `kind` is "end" (active − placebo at the end visit),
    "net" ((active end − baseline) − (placebo end − baseline)), "within" (active arm, end −
    baseline) or "pooled" (a meta-analysis' difference). `spread`: the 95 % CI half-width —
    reported for a meta-analysis; otherwise 1.96·√(Σ SDᵢ²/nᵢ) over the end values of the
    arms compared (for a change, the end SD stands for the SD of the change, which the
    papers do not report)."""

    study: str
    observable: str
    kind: str
    end: tuple[float, str]  # (time, unit) of the end visit
    published: float
    spread: float
    terms: tuple[tuple[float, str], ...]


#: (study, observable, kind) of every effect the leave-one-study-out table predicts.
EFFECTS: tuple[tuple[str, str, str], ...] = (
    ("rodriguez_moran_2003", "serum_mg", "end"),
    ("rodriguez_moran_2003", "homa_ir", "end"),
    ("rodriguez_moran_2003", "fasting_glucose", "net"),
    ("rodriguez_moran_2003", "hba1c", "net"),
    ("de_valk_1998", "serum_mg", "end"),
    ("de_valk_1998", "urinary_mg_24h", "end"),
    ("de_valk_1998", "fasting_glucose", "end"),
    ("de_valk_1998", "hba1c", "end"),
    ("guerrero_romero_2004", "serum_mg", "net"),
    ("guerrero_romero_2004", "homa_ir", "net"),
    ("solati_2014", "fasting_glucose", "net"),
    ("de_souza_e_silva_2014", "homa_ir", "net"),
    ("de_souza_e_silva_2014", "serum_mg", "within"),
    ("song_2006_meta", "fasting_glucose", "pooled"),
    ("simental_mendia_2016_meta", "homa_ir", "pooled"),
)


def effects(table: pd.DataFrame | None = None) -> list[Effect]:
    """The published treatment effects (`EFFECTS`) with their readout combinations."""
    table = published_targets() if table is None else table
    out = []
    for study, obs, kind in EFFECTS:
        rows = table[(table["study"] == study) & (table["observable"] == obs)]
        design = TRIAL_BY_STUDY[study]
        summary = _PUBLISHED_TO_SUMMARY[obs]
        active, placebo = Arm(design.preset, design.dose_mmol), Arm(design.preset, 0.0)
        if kind == "pooled":
            (row,) = rows.itertuples()
            v = visit_index(float(row.time), row.time_unit)
            terms = (
                (1.0, arm_readout(active, summary, v)),
                (-1.0, arm_readout(placebo, summary, v)),
            )
            out.append(
                Effect(study, obs, kind, (row.time, row.time_unit), row.value, row.spread, terms)
            )
            continue
        end_time = rows["time"].max()
        unit = rows["time_unit"].iloc[0]
        v_end, v0 = visit_index(float(end_time), unit), 0

        def at(arm: str, time: float, rows: pd.DataFrame = rows) -> pd.Series:
            (match,) = [r for _, r in rows.iterrows() if r["arm"] == arm and r["time"] == time]
            return match

        def sd2n(r: pd.Series) -> float:
            n = float(r["n"])
            sd = float(r["spread"]) * (
                math.sqrt(n) if str(r["spread_kind"]).lower().startswith("sem") else 1.0
            )
            return sd * sd / n

        if kind == "within":
            a_end, a0 = at("magnesium", end_time), at("magnesium", 0)
            published = a_end["value"] - a0["value"]
            spread = 1.96 * math.sqrt(sd2n(a_end))
            terms = (
                (1.0, arm_readout(active, summary, v_end)),
                (-1.0, arm_readout(active, summary, v0)),
            )
        else:
            a_end, p_end = at("magnesium", end_time), at("placebo", end_time)
            published = a_end["value"] - p_end["value"]
            spread = 1.96 * math.sqrt(sd2n(a_end) + sd2n(p_end))
            terms = (
                (1.0, arm_readout(active, summary, v_end)),
                (-1.0, arm_readout(placebo, summary, v_end)),
            )
            if kind == "net":
                published -= at("magnesium", 0)["value"] - at("placebo", 0)["value"]
                terms += (
                    (-1.0, arm_readout(active, summary, v0)),
                    (1.0, arm_readout(placebo, summary, v0)),
                )
        out.append(
            Effect(study, obs, kind, (float(end_time), unit), round(published, 9), spread, terms)
        )
    return out


def combination_matrix(combos: list[tuple[tuple[float, str], ...]], names: list[str]) -> np.ndarray:
    """The matrix C with C @ readouts = the combinations (rows) over the readouts `names`."""
    index = {n: i for i, n in enumerate(names)}
    c = np.zeros((len(combos), len(names)))
    for i, terms in enumerate(combos):
        for coefficient, name in terms:
            c[i, index[name]] += coefficient
    return c
