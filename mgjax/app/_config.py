"""Run configurations: YAML files validated by pydantic, command-line overrides and sweeps.

The numerical core never reads a config; the command line turns one into objects
(`mgjax.app._resolve`). One schema serves every command: each reads the sections it needs
(`mgjax petab` its `petab:` section, whose keys its command-line options set).

- `load_config(path, overrides)`: safe-load the YAML, apply `key.sub=value` overrides, validate;
  any problem is one `ConfigError` naming the file, the key, the bad value and what is allowed:
  one line, the key as the user's dotted path (`fit.priors.k21.median`), an echoed value cut to
  60 characters. Numbers are finite and never booleans; files over 1 MB, nested deeper than
  16 levels or holding over 10,000 values are refused before validation.
- `grid_points(grid)`: the points of a sweep (`key=v1,v2` per axis; the product).
"""

from __future__ import annotations

import difflib
import itertools
import re
import reprlib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..batch._store import parse_shard
from ..data._dataset import PROTOCOLS, TIME_UNITS
from ..data._nonmem import dose_target, observation_target
from ..fit._experiment import INTERVAL_OBSERVABLES
from ..model import OBSERVABLE_UNITS
from ..model._parameters import parameter_infos
from ..protocols import SALT_BIOAVAILABILITY

PresetName = Literal[
    "healthy", "t2dm", "t2dm_hypomagnesemia", "prediabetes", "ir_hypomagnesemia", "t2dm_insulin"
]
TherapyName = Literal["ppi", "thiazide", "metformin", "basal_insulin"]
#: The groups of synthetic cohorts and of `mgjax simulate` by default.
GROUP_NAMES = ("healthy", "t2dm", "t2dm_hypomagnesemia")
#: The groups `mgjax synth` has populations for (`mgjax.synth._cohort.GROUPS`).
SynthGroupName = Literal["healthy", "t2dm", "t2dm_hypomagnesemia"]
SOLVERS = ("rodas4", "kvaerno5", "kvaerno3", "tsit5")
OPTIMISERS = ("levenberg_marquardt", "lbfgs", "bfgs", "adam")
#: Local optimisers of `mgjax petab`: fides keeps the bounds itself on the PEtab scale;
#: Optimistix's Levenberg–Marquardt moves through MINUIT's sine transform of the bounds.
PETAB_OPTIMISERS = ("fides", "levenberg_marquardt")
#: fides' Hessian strategies (`mgjax.petab._fides.HESSIANS`; named here so the schema loads
#: without the `petab` extra).
PETAB_HESSIANS = ("gauss_newton", "gnsbfgs", "tssm", "ssm", "fx")
PROTOCOL_KINDS = (
    "hyperinsulinemic_clamp",
    "hyperglycemic_clamp",
    "ivgtt",
    "ogtt",
    "oral_mg_trial",
    "fasting",
)
#: Refused before validation: a run config is a few kB, nests ~5 levels, holds a few dozen values.
MAX_BYTES = 1_000_000
MAX_DEPTH = 16
MAX_VALUES = 10_000
#: At most this many characters of a value are echoed in a message.
SHOWN = 60


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the key and what is allowed."""


def _clip(text: str, limit: int = SHOWN) -> str:
    """`text` on one line (control characters escaped), cut to `limit` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, SHOWN, SHOWN
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 4


def _shown(value: Any) -> str:
    """A short one-line repr of a user's value (never the whole of a huge one)."""
    try:
        return _clip(_REPR.repr(value))
    except Exception:  # e.g. an int beyond Python's str-conversion limit
        return f"<{type(value).__name__}>"


def _no_bool(value: Any) -> Any:
    """Refuse true/false where a number is expected (pydantic reads them as 1/0)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


#: A finite number (no NaN, no ±infinity), never a boolean; integers are accepted.
Real = Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False)]
#: An integer, never a boolean.
Whole = Annotated[int, BeforeValidator(_no_bool)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _close(name: str, known: list[str]) -> list[str]:
    """Known names close to `name` (none for an absurdly long one)."""
    return difflib.get_close_matches(name, known, n=3) if len(name) <= 100 else []


def _known_parameter(name: str) -> str:
    infos = parameter_infos()
    if name not in infos:
        close = _close(name, list(infos))
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown parameter {_shown(name)}; {hint}list them with `mgjax params`")
    return name


def _known_observable(name: str) -> str:
    known = set(OBSERVABLE_UNITS) | set(INTERVAL_OBSERVABLES)
    if name not in known:
        close = _close(name, sorted(known))
        raise ValueError(
            f"unknown observable {_shown(name)}; "
            + (f"did you mean {', '.join(close)}? " if close else "")
            + f"known: {', '.join(sorted(known))}"
        )
    return name


class DataConfig(_Strict):
    """Where the dataset is (docs/data.md); `null` is the bundled 24-subject virtual cohort."""

    path: Path | None = None


class ModelConfig(_Strict):
    """Each subject's fixed parameters: its group's preset (subjects.csv `group`) unless
    `preset` names one for everyone, then the background `therapies` (`THERAPY_CHANGES`: every
    subject on them, in every protocol), then `parameters` (model units) on top."""

    preset: PresetName | None = None
    therapies: list[TherapyName] = []
    parameters: dict[str, Real] = {}

    @field_validator("parameters")
    @classmethod
    def _names(cls, v: dict[str, Real]) -> dict[str, Real]:
        for name in v:
            _known_parameter(name)
        return v


class PriorConfig(_Strict):
    """A log-normal prior: median (model units) and coefficient of variation."""

    median: Real = Field(gt=0.0)
    cv: Real = Field(gt=0.0, le=10.0)


class ErrorModelConfig(_Strict):
    """sigma = sqrt(additive² + (proportional · prediction)²), additive in the observable's
    model unit."""

    additive: Real = Field(0.0, ge=0.0)
    proportional: Real = Field(0.0, ge=0.0, le=5.0)


class FitConfig(_Strict):
    """What to estimate, its priors (`range` = weak priors from the parameter table's
    plausible ranges), the error model per observable (default: the cohort's), and where the
    free parameters start (`start_from`: a finished fit's run directory — each group starts at
    its median estimate — or a population fit's — the typical values; default the presets)."""

    free: list[str] = Field(
        default_factory=lambda: [
            "signalling_capacity",
            "egp_max",
            "insulin_clearance_rate",
            "dietary_mg_intake",
            "dct_capacity",
        ],
        min_length=1,
    )
    priors: dict[str, PriorConfig] | Literal["range", "none"] = "none"
    error_model: dict[str, ErrorModelConfig] = {}
    start_from: Path | None = None

    @field_validator("free")
    @classmethod
    def _free(cls, v: list[str]) -> list[str]:
        for name in v:
            _known_parameter(name)
        if len(set(v)) != len(v):
            raise ValueError("a parameter is listed twice")
        return v

    @field_validator("error_model")
    @classmethod
    def _observables(cls, v: dict[str, ErrorModelConfig]) -> dict[str, ErrorModelConfig]:
        for name, model in v.items():
            _known_observable(name)
            if model.additive == 0.0 and model.proportional == 0.0:
                raise ValueError(f"{name}: additive and proportional are both 0 (sigma = 0)")
        return v


class SolverConfig(_Strict):
    """The ODE solver. `adjoint`: `auto` (forward mode for Levenberg–Marquardt, checkpointed
    reverse mode for gradient optimisers), or force `forward` / `checkpoint`.
    `sensitivities` (Rodas4 only): `auto` (staggered in Levenberg–Marquardt's Jacobians,
    exact elsewhere), `exact` or `staggered` (`mgjax.Rodas4`)."""

    type: Literal["rodas4", "kvaerno5", "kvaerno3", "tsit5"] = "rodas4"
    rtol: Real = Field(1e-6, gt=0.0, lt=1e-2)
    atol: Real = Field(1e-9, gt=0.0, lt=1e-2)
    quadrature_atol: Real = Field(1e-6, gt=0.0, lt=1.0)
    max_steps: Whole = Field(16384, ge=16, le=10_000_000)
    adjoint: Literal["auto", "forward", "checkpoint"] = "auto"
    sensitivities: Literal["auto", "exact", "staggered"] = "auto"


class OptimiserConfig(_Strict):
    """The optimiser: `levenberg_marquardt` runs the vmapped batch engine; the others (and
    multistart) fit subject by subject. `learning_rate` and `schedule` are Adam's."""

    name: Literal["levenberg_marquardt", "lbfgs", "bfgs", "adam"] = "levenberg_marquardt"
    learning_rate: Real = Field(0.05, gt=0.0, le=10.0)
    schedule: Literal["cosine"] = "cosine"
    max_steps: Whole = Field(200, ge=1, le=100_000)
    rtol: Real = Field(1e-8, gt=0.0, lt=1.0)
    atol: Real = Field(1e-8, gt=0.0, lt=1.0)


class MultistartConfig(_Strict):
    """Latin-hypercube starts within the bounds (1 = from the base model's values)."""

    starts: Whole = Field(1, ge=1, le=10_000)
    spread: Real | None = Field(None, gt=0.0, le=1.0)


class BatchConfig(_Strict):
    """The batch engine: `width` lanes (subjects in flight; bounds memory), refilled every
    `round_steps` iterations, over `devices` local devices (null = all); `shard` `i/n` fits
    every n-th subject (scheduler job arrays); `workers` CPU processes, one per core, each
    with its own lanes (the round program uses one core; 1 = this process, on `devices`);
    `restarts` further starts, with more damping, for a subject whose fit ends implausibly
    (χ² above its 99.9 % quantile; the best start is kept); `chunk` lanes per call of the
    compiled round (null: one per device on CPU, `width` on GPUs; one program for any cohort
    size)."""

    width: Whole = Field(64, ge=1, le=1_000_000)
    chunk: Whole | None = Field(None, ge=1, le=1_000_000)
    round_steps: Whole = Field(4, ge=1, le=10_000)
    restarts: Whole = Field(1, ge=0, le=100)
    devices: Whole | None = Field(None, ge=1)
    workers: Whole = Field(1, ge=1, le=4096)
    shard: str | None = None

    @field_validator("shard")
    @classmethod
    def _shard(cls, v: str | None) -> str | None:
        try:
            if v is not None:
                parse_shard(v)
        except ValueError as e:  # its message echoes the whole value: the key's message does
            raise ValueError(str(e).rpartition(": ")[2]) from None
        return v


_Count = Annotated[Whole, Field(ge=0)]


class SynthConfig(_Strict):
    """`mgjax synth`: `n` subjects split over `groups` (or `{group: count}`), the default
    study design (isoglycaemic clamp + fasting Mg²⁺ labs)."""

    n: Whole = Field(24, ge=1, le=10_000_000)
    groups: list[SynthGroupName] | dict[SynthGroupName, _Count] = list(GROUP_NAMES)


class _Protocol(_Strict):
    name: str | None = None
    every: Real = Field(5.0, gt=0.0, description="sampling interval, min (days for trials)")
    observables: list[str] = ["glucose", "insulin", "glucose_infusion", "serum_mg"]

    @field_validator("observables")
    @classmethod
    def _obs(cls, v: list[str]) -> list[str]:
        for name in v:
            _known_observable(name)
        return v


class HyperinsulinemicClampConfig(_Protocol):
    kind: Literal["hyperinsulinemic_clamp"]
    insulin_rate: Real = Field(40.0, gt=0.0, le=2000.0)
    insulin_unit: Literal["mU/m2/min", "mU/kg/min"] = "mU/m2/min"
    target_glucose: Real | None = Field(None, gt=2.0, lt=30.0, description="mmol/L")
    duration: Real = Field(120.0, ge=30.0, le=600.0)


class HyperglycemicClampConfig(_Protocol):
    kind: Literal["hyperglycemic_clamp"]
    increment: Real = Field(6.9, gt=0.0, lt=25.0, description="mmol/L above basal")
    duration: Real = Field(120.0, ge=30.0, le=600.0)
    every: Real = Field(2.0, gt=0.0)
    observables: list[str] = ["glucose", "insulin", "c_peptide", "glucose_infusion"]


class IVGTTConfig(_Protocol):
    kind: Literal["ivgtt"]
    glucose_dose: Real = Field(0.3, gt=0.0, le=1.0, description="g/kg")
    insulin_dose: Real = Field(0.03, ge=0.0, le=0.2, description="U/kg (0: standard IVGTT)")
    duration: Real = Field(180.0, ge=20.0, le=600.0)
    every: Real = Field(2.0, gt=0.0)
    observables: list[str] = ["glucose", "insulin"]


class OGTTConfig(_Protocol):
    kind: Literal["ogtt"]
    glucose_dose: Real = Field(75.0, gt=0.0, le=150.0, description="g of glucose drunk")
    incretin: bool = True
    duration: Real = Field(180.0, ge=30.0, le=600.0)
    every: Real = Field(15.0, gt=0.0)
    observables: list[str] = ["glucose", "insulin", "c_peptide"]


class OralMagnesiumTrialConfig(_Protocol):
    kind: Literal["oral_mg_trial"]
    dose_mmol_per_day: Real = Field(26.0, ge=0.0, le=200.0, description="elemental Mg²⁺")
    weeks: Whole = Field(16, ge=1, le=520)
    salt: str = "chloride"
    averaged: bool = False
    every: Real = Field(7.0, gt=0.0, description="days between visits")
    observables: list[str] = ["serum_mg", "glucose", "insulin", "homa_ir", "hba1c"]

    @field_validator("salt")
    @classmethod
    def _salt(cls, v: str) -> str:
        if v not in SALT_BIOAVAILABILITY:
            raise ValueError(f"unknown salt; known: {', '.join(SALT_BIOAVAILABILITY)}")
        return v


class FastingConfig(_Protocol):
    kind: Literal["fasting"]
    duration: Real = Field(0.0, ge=0.0)
    observables: list[str] = ["glucose", "insulin", "serum_mg", "urinary_mg", "homa_ir"]


ProtocolConfig = Annotated[
    HyperinsulinemicClampConfig
    | HyperglycemicClampConfig
    | IVGTTConfig
    | OGTTConfig
    | OralMagnesiumTrialConfig
    | FastingConfig,
    Field(discriminator="kind"),
]


class SimulateConfig(_Strict):
    """`mgjax simulate`: the listed presets (one simulated subject each) under `protocols`."""

    presets: list[PresetName] = list(GROUP_NAMES)
    protocols: list[ProtocolConfig] = Field(
        default_factory=lambda: [HyperinsulinemicClampConfig(kind="hyperinsulinemic_clamp")],
        min_length=1,
    )


class ReportConfig(_Strict):
    """What the report draws: data vs fit for at most `max_subjects` subjects."""

    max_subjects: Whole = Field(12, ge=0, le=1000)
    enabled: bool = True


class PetabConfig(_Strict):
    """`mgjax petab`: evaluate a PEtab v1 problem at its nominal parameters (`nominal`) or fit it
    from `starts` random starts within the bounds (or the starts of `starts_file`, on the PEtab
    scale). Each start is a local fit by fides (bounded trust region on the PEtab scale; Hessian
    `hessian`, up to `restarts` restarts from its end point, `explore` the flat directions of a
    new best) or by Levenberg–Marquardt (Optimistix, through a bound transform); `vmap` fits all
    starts in one program. `rtol`/`atol`: the ODE solver's tolerances; `hierarchical`: scaling
    and noise parameters in closed form."""

    problem: Path | None = None
    nominal: bool = False
    starts: Whole = Field(20, ge=1)
    seed: Whole = Field(0, ge=0, lt=2**63)
    starts_file: Path | None = None
    max_steps: Whole = Field(1000, ge=1)
    rtol: Real = Field(1e-6, gt=0.0, lt=1.0)
    atol: Real = Field(1e-10, gt=0.0, lt=1.0)
    hierarchical: bool = True
    optimiser: str = "fides"
    hessian: str = "gauss_newton"
    restarts: Whole = 10
    explore: bool = True
    vmap: bool = False

    @field_validator("optimiser")
    @classmethod
    def _optimiser(cls, v: str) -> str:
        if v not in PETAB_OPTIMISERS:
            raise ValueError(f"unknown optimiser {_shown(v)}; one of {', '.join(PETAB_OPTIMISERS)}")
        return v

    @field_validator("hessian")
    @classmethod
    def _hessian(cls, v: str) -> str:
        if v not in PETAB_HESSIANS:
            raise ValueError(
                f"unknown Hessian strategy {_shown(v)}; one of {', '.join(PETAB_HESSIANS)}"
            )
        return v

    @field_validator("restarts")
    @classmethod
    def _restarts(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"restarts must be >= 0, got {v}")
        return v


class CovariateEffectConfig(_Strict):
    """One covariate effect of a population model (`mgjax.population.CovariateEffect`)."""

    parameter: str
    covariate: str
    kind: Literal["power", "linear", "categorical"] = "power"
    reference: Real = 1.0
    level: str | Real | None = None


class SaemConfig(_Strict):
    """SAEM's iterations (Monolix's K₁ exploration, K₂ smoothing; the first `annealing`
    keep the variances from shrinking fast), Markov chains per subject, and the draws of
    `covariance: stochastic` (Louis' information from the chains at the estimate)."""

    exploration: Whole = Field(200, ge=1, le=100_000)
    smoothing: Whole = Field(100, ge=1, le=100_000)
    annealing: Whole = Field(100, ge=0, le=100_000)
    chains: Whole = Field(1, ge=1, le=100)
    information_draws: Whole = Field(200, ge=1, le=100_000)

    @model_validator(mode="after")
    def _annealing_within_exploration(self) -> SaemConfig:
        if self.annealing > self.exploration:
            raise ValueError(
                f"annealing ({self.annealing}) cannot exceed exploration ({self.exploration})"
            )
        return self


class NutsConfig(_Strict):
    """`population.method: nuts`: warm-up and kept draws per chain, and the chains."""

    warmup: Whole = Field(500, ge=1, le=1_000_000)
    samples: Whole = Field(500, ge=1, le=1_000_000)
    chains: Whole = Field(2, ge=1, le=64)


class PopulationConfig(_Strict):
    """`mgjax population`: a nonlinear mixed-effects fit of `structural_model` —
    `one_compartment` (oral PK from a NONMEM-style CSV, `data`) or `coupled` (the Mg²⁺–glucose
    model on a native dataset folder: every subject's protocols, `parameters` estimated,
    SAEM only) — with random effects on `random`, the covariate effects `covariates`, Ω
    `omega` (diagonal or full), starting typical values `start` (physical units) and
    random-effect SDs `omega_start`."""

    data: Path | None = None
    structural_model: Literal["one_compartment", "coupled"] = "one_compartment"
    #: quantities with a random effect (default: one_compartment's ka, cl, v; the coupled
    #: model needs them named)
    random: list[str] | None = None
    #: coupled: the model parameters estimated (default: those in `random`; any other is a
    #: fixed effect)
    parameters: list[str] | None = None
    covariates: list[CovariateEffectConfig] = []
    omega: Literal["diagonal", "full"] = "diagonal"
    start: dict[str, Real] = {}
    omega_start: Real = Field(0.3, gt=0.0, le=5.0)
    #: the covariance step: R⁻¹ or R⁻¹SR⁻¹ of the FOCE-I OFV, or `stochastic` (Louis'
    #: information by MCMC at the estimate: with SAEM, simulations only), or none
    covariance: Literal["hessian", "sandwich", "expected", "stochastic", "none"] = "hessian"
    #: estimation method: FOCE-I (Laplace, exact gradients), SAEM (Monolix's algorithm) or
    #: NUTS (the fully Bayesian posterior, numpyro; tables and summary, no report)
    method: Literal["foce-i", "saem", "nuts"] = "foce-i"
    saem: SaemConfig = SaemConfig()
    nuts: NutsConfig = NutsConfig()
    #: one_compartment: observation compartment (CMT) → observable; dose compartments
    observables: dict[int, str] = {2: "concentration"}
    dose_compartments: list[int] = [1]
    #: the residual error model's terms (an error term not listed is zero: `[additive]` is
    #: the additive model, `[proportional]` the proportional one)
    estimate_error: list[Literal["additive", "proportional"]] = Field(
        ["additive", "proportional"], min_length=1
    )
    max_steps: Whole = Field(500, ge=1, le=100_000)
    #: FOCE-I's outer optimiser: fisher (Levenberg–Marquardt with the expected information
    #: of the FOCE-I linearisation; few iterations), scoring (the same with the subjects'
    #: gradients' outer product) or bfgs
    outer: Literal["fisher", "scoring", "bfgs"] = "fisher"
    #: draws per subject of the importance-sampling OFV (0: skip; default 1000 for SAEM,
    #: 0 for FOCE-I)
    importance_samples: Whole | None = Field(None, ge=0, le=1_000_000)
    #: FOCE-I multistart: outer fits from the start and `starts` − 1 perturbed ones (log-scale
    #: typical values and log ω moved by N(0, 0.5²)); the lowest OFV wins
    starts: Whole = Field(1, ge=1, le=1000)
    #: the report's visual predictive check (`mgjax vpc` overrides): simulated replicates,
    #: time bins (quantile bins; one per distinct time when there are at most this many),
    #: a covariate column to stratify by, and the prediction-corrected VPC as well
    vpc_replicates: Whole = Field(200, ge=1, le=100_000)
    vpc_bins: Whole = Field(10, ge=1, le=1000)
    vpc_stratify: str | None = None
    vpc_prediction_corrected: bool = True
    #: FOCE-I splits the subjects over this many local devices (null: all)
    devices: Whole | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _coupled_by_saem(self) -> PopulationConfig:
        if self.structural_model != "coupled":
            if self.parameters is not None:
                raise ValueError("parameters: only for structural_model coupled")
            return self
        if not self.random:
            raise ValueError(
                "structural_model coupled: name the parameters with a random effect in "
                "`random` (e.g. [signalling_capacity, insulin_clearance_rate])"
            )
        if self.method != "saem" or self.covariance not in ("stochastic", "none"):
            raise ValueError(
                "structural_model coupled: use method saem with covariance stochastic (or "
                "none) — SAEM and its stochastic covariance step need simulations only, "
                "while FOCE-I's and NUTS's derivatives through the stiff solver take too "
                f"long to compile (got method {self.method}, covariance {self.covariance})"
            )
        return self


class ConvertObservationConfig(_Strict):
    """An observation compartment (CMT) of a NONMEM-style file: the native observable its DV
    measures and DV's unit (docs/data.md)."""

    observable: str
    unit: str


class ConvertDoseConfig(_Strict):
    """A dose compartment (CMT): the native dose's route, substance and AMT's unit (an oral
    Mg²⁺ salt optional)."""

    route: str
    substance: str
    unit: str
    salt: str | None = None


class ConvertConfig(_Strict):
    """`mgjax convert`: a NONMEM-style CSV → the native dataset. Each observation CMT → its
    observable and DV's unit, each dose CMT → route, substance and AMT's unit; TIME's unit; the
    protocol of every row (`protocol`) or a column naming each row's (`protocol_column`);
    covariate columns renamed for subjects.csv (`{WT: weight}`)."""

    protocol: str | None = None
    protocol_column: str | None = None
    time_unit: str = "h"
    observations: dict[int, ConvertObservationConfig] = {}
    doses: dict[int, ConvertDoseConfig] = {}
    covariates: dict[str, str] = {}

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str | None) -> str | None:
        if v is not None and v not in PROTOCOLS:
            raise ValueError(f"unknown protocol {_shown(v)}; use one of {', '.join(PROTOCOLS)}")
        return v

    @field_validator("time_unit")
    @classmethod
    def _time_unit(cls, v: str) -> str:
        if v.strip() not in TIME_UNITS:
            raise ValueError(
                f"unknown time unit {_shown(v)}; use one of {', '.join(sorted(TIME_UNITS))}"
            )
        return v

    @field_validator("observations")
    @classmethod
    def _observations(cls, v: dict[int, ConvertObservationConfig]) -> dict:
        for cmt, target in v.items():
            _compartment(cmt)
            try:
                observation_target(target.observable, target.unit)
            except ValueError as e:
                raise ValueError(f"CMT {cmt}: {e}") from None
        return v

    @field_validator("doses")
    @classmethod
    def _doses(cls, v: dict[int, ConvertDoseConfig]) -> dict:
        for cmt, target in v.items():
            _compartment(cmt)
            try:
                dose_target(target.route, target.substance, target.unit, target.salt)
            except ValueError as e:
                raise ValueError(f"CMT {cmt}: {e}") from None
        return v


def _compartment(cmt: int) -> None:
    if cmt < 1:
        raise ValueError(f"compartment {cmt}: NONMEM compartments (CMT) are numbered from 1")


class VariantConfig(_Strict):
    """One model variant of `mgjax compare`: fixed parameter changes (model units) on the base
    model and extra free parameters."""

    parameters: dict[str, Real] = {}
    free: list[str] = []

    @field_validator("parameters", "free")
    @classmethod
    def _names(cls, v):
        for name in v:  # the keys of `parameters`, the items of `free`
            _known_parameter(name)
        return v


class CompareConfig(_Strict):
    """`mgjax compare`: the variants fitted to the same data (`fit.free` plus each variant's
    own), cross-validation folds over each subject's observations, and whether all subjects
    share one parameter set (`pooled`, for the arm means of one trial)."""

    variants: dict[str, VariantConfig] = {}
    folds: Whole = Field(5, ge=0, le=50)
    pooled: bool = False


class RunConfig(_Strict):
    """One config for every command (`mgjax run | fit | synth | simulate | sweep | petab |
    population | convert`)."""

    seed: Whole = Field(0, ge=0, lt=2**63)
    output_dir: Path = Path("runs")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    fit: FitConfig = FitConfig()
    solver: SolverConfig = SolverConfig()
    optimiser: OptimiserConfig = OptimiserConfig()
    multistart: MultistartConfig = MultistartConfig()
    batch: BatchConfig = BatchConfig()
    synth: SynthConfig = SynthConfig()
    simulate: SimulateConfig = SimulateConfig()
    report: ReportConfig = ReportConfig()
    petab: PetabConfig = PetabConfig()
    population: PopulationConfig = PopulationConfig()
    convert: ConvertConfig = ConvertConfig()
    compare: CompareConfig = CompareConfig()


# --- loading, overrides, errors ----------------------------------------------------------------

#: pydantic's tag of a union member in an error's location: `dict[str,PriorConfig]`,
#: `list[literal['healthy',…]]`, `function-after[…]`; never a key of the user's config.
_TAG = re.compile(r"[a-z][\w-]*\[.*\]\Z", re.DOTALL)
#: Errors of a union member refusing the value's type outright, and what that member wanted.
_WANTED = {
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}
#: pydantic's messages in the config's words, by error type.
_MESSAGES = {
    **dict.fromkeys(("dict_type", "model_type", "model_attributes_type"), "must be a mapping"),
    "list_type": "must be a list",
    "finite_number": "must be a finite number, not NaN or infinity",
    "path_type": "must be a file path",
}


def _bare(annotation: Any) -> Any:
    """`annotation` without `Annotated[…]` and `| None`."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _member(annotation: Any, part: Any) -> Any:
    """The type that location `part` selects within `annotation` (None: unknown)."""
    annotation = _bare(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field else None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list:
        return args[0]
    if origin is dict:
        return args[1]
    for member in args if origin in (Union, types.UnionType) else ():
        member = _bare(member)
        kind = getattr(member, "model_fields", {}).get("kind")
        if kind is not None and part in get_args(kind.annotation):
            return member  # a discriminated union's member, by its `kind`
        name = getattr(get_origin(member), "__name__", "")
        if isinstance(part, str) and name and part.startswith(f"{name}["):
            return member
    return None


def _allowed(loc: tuple) -> str:
    """The keys allowed where an unknown key at `loc` is (for its message)."""
    current: Any = RunConfig
    for part in loc[:-1]:
        current = _member(current, part)
        if current is None:
            return ""
    current = _bare(current)
    return ", ".join(getattr(current, "model_fields", {}))


def _name(part: Any) -> str:
    """A key path's piece for mapping key `part`: '.rtol' (cut short; '.""' for an empty key)."""
    return "." + (_clip(str(part), 40) or '""')


def _path(loc: tuple, raw: Any) -> list[str]:
    """The user's key path of pydantic's `loc`, as pieces ('.fit', '.priors', '[0]'): walking
    `raw` alongside drops pydantic's union tags (`dict[str,…]`, a protocol's kind, '[key]')."""
    pieces, node = [], raw
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue  # the discriminated union's member
        if isinstance(node, dict) and part in node:
            pieces.append(_name(part))
            node = node[part]
        elif isinstance(part, int):
            pieces.append(f"[{part}]")
            node = node[part] if isinstance(node, list | tuple) and 0 <= part < len(node) else None
        elif part == "[key]" or (isinstance(part, str) and _TAG.match(part)):
            continue
        else:
            pieces.append(_name(part))
            node = None
    return pieces


def _key(pieces: list[str]) -> str:
    return _clip("".join(pieces).removeprefix("."), 100) or "(top level)"


def _noun(pieces: list[str]) -> str:
    """What the values at a key path are called: 'group' for `synth.groups[0]`, 'optimiser'
    for `optimiser.name`."""
    names = [p[1:] for p in pieces if p.startswith(".")]
    while len(names) > 1 and names[-1] in ("name", "type", "kind"):
        names.pop()
    noun = names[-1] if names else "value"
    if noun.endswith("s") and not noun.endswith("ss") and len(noun) > 3:
        noun = noun[:-1]
    return _clip(noun.replace("_", " "), 40)


def _options(error: dict) -> str:
    """A Literal error's allowed values: 'healthy, t2dm, t2dm_hypomagnesemia'."""
    expected = str((error.get("ctx") or {}).get("expected", ""))
    return _clip(", ".join(re.findall(r"'([^']*)'", expected)) or expected, 200)


def _branch_refused(error: dict) -> bool:
    """Whether a union member refused the value's type outright (its loc ends at the member's
    tag), e.g. 'a valid dictionary' for a string given to `dict | Literal['range', 'none']`."""
    last = error["loc"][-1] if error["loc"] else None
    if not (isinstance(last, str) and _TAG.match(last)):
        return False
    return not (error["type"] == "literal_error" and isinstance(error.get("input"), str))


def _wanted(error: dict) -> str:
    if error["type"] == "literal_error":
        return f"one of {_options(error)}"
    return _WANTED.get(error["type"]) or error["msg"].removeprefix("Input should be ")


def _union_message(source: str, errors: list[dict], raw: Any) -> str:
    """Every member of a union refused the value: what each would take."""
    first = errors[0]
    same = [e for e in errors if e["loc"][:-1] == first["loc"][:-1]]
    wanted = " or ".join(dict.fromkeys(_wanted(e) for e in same))
    key = _key(_path(first["loc"], raw))
    return f"{source}: key '{key}' = {_shown(first.get('input'))}: use {wanted}"


def _msg(error: dict) -> str:
    """pydantic's message in the config's words ('must be …'), cut short."""
    msg = _MESSAGES.get(error["type"]) or error["msg"].removeprefix("Value error, ")
    return _clip(msg.replace("Input should be", "must be").replace("Keys should", "keys must"), 200)


def _literal_problem(error: dict, key: str, pieces: list[str]) -> str:
    """'unknown group 't2dmm'; use one of healthy, …' for a value not among a Literal's."""
    value, options = error.get("input"), _options(error)
    if isinstance(value, str):
        return f"key '{key}': unknown {_noun(pieces)} {_shown(value)}; use one of {options}"
    return f"key '{key}' = {_shown(value)}: use one of {options}"


def _problem(error: dict, pieces: list[str]) -> str:
    """What is wrong at the error's key and what to do (the message after the source)."""
    kind, value, key = error["type"], error.get("input"), _key(pieces)
    if kind == "extra_forbidden":
        allowed = _allowed(tuple(error["loc"]))
        return f"unknown key '{key}'" + (f"; allowed here: {allowed}" if allowed else "; remove it")
    if kind == "missing":
        return f"key '{key}' is required"
    if kind == "union_tag_not_found":
        return f"key '{key}' needs a 'kind': one of {', '.join(PROTOCOL_KINDS)}"
    if kind == "union_tag_invalid":
        tag = (error.get("ctx") or {}).get("tag", value)
        kinds = ", ".join(PROTOCOL_KINDS)
        return f"key '{key}.kind': unknown protocol {_shown(tag)}; use one of {kinds}"
    if kind == "literal_error":
        return _literal_problem(error, key, pieces)
    return f"key '{key}' = {_shown(value)}: {_msg(error)}"


def _message(source: str, errors: list[dict], raw: Any = None) -> str:
    """One line for pydantic's `errors` of validating `raw`: the file, the user's dotted key, the
    value (cut short) and what to do. A union's member that refused the value's type outright is
    reported only when every member did."""
    direct = [e for e in errors if not _branch_refused(e)]
    if not direct:
        return _union_message(source, errors, raw)
    error = direct[0]
    pieces = _path(tuple(error["loc"]), raw)
    if error["loc"] and error["loc"][-1] == "[key]":  # a mapping's key itself is bad
        pieces, key = pieces[:-1], _key(pieces[:-1])
        if error["type"] == "literal_error":
            return f"{source}: " + _literal_problem(error, key, pieces)
        return f"{source}: key '{key}': the key {_shown(error.get('input'))} {_msg(error)}"
    return f"{source}: {_problem(error, pieces)}"


def _shape(raw: Any, source: str) -> None:
    """Refuse a config nested deeper than `MAX_DEPTH` or holding more than `MAX_VALUES` values
    (a YAML alias bomb, a self-referencing alias) before anything walks it recursively."""
    stack: list[tuple[Any, tuple]] = [(raw, ())]
    count = 0
    while stack:
        node, where = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                f"{source}: more than {MAX_VALUES} values; a run config holds a few dozen "
                "(look for a YAML alias repeated many times)"
            )
        if len(where) > MAX_DEPTH:
            key = _key([f"[{p}]" if isinstance(p, int) else f".{p}" for p in where[:6]])
            raise ConfigError(
                f"{source}: key '{key}…' is nested more than {MAX_DEPTH} levels deep; "
                "a run config nests a few levels"
            )
        if isinstance(node, dict):
            stack.extend((v, (*where, _clip(str(k), 40))) for k, v in node.items())
        elif isinstance(node, list | tuple | set | frozenset):
            stack.extend((v, (*where, i)) for i, v in enumerate(node))


def validate(raw: dict, source: str = "config") -> RunConfig:
    """A `RunConfig` from a mapping; a `ConfigError` naming `source` and the first bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    _shape(raw, source)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_message(source, e.errors(include_url=False), raw)) from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply; a run config nests a few levels") from None


def with_values(section: BaseModel, values: dict[str, Any]) -> BaseModel:
    """`section` with `values` set (command-line options), validated; a bad value is one
    `ConfigError` with the validator's own message."""
    try:
        return type(section).model_validate(section.model_dump() | values)
    except ValidationError as e:
        msg = e.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(_clip(msg, 300)) from None


def _text(path: Path) -> str:
    """The file's text; a `ConfigError` when missing, unreadable, not UTF-8 or over `MAX_BYTES`."""
    try:
        small = path.stat().st_size <= MAX_BYTES
        text = path.read_text(encoding="utf-8") if small else ""
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable YAML text file ({_clip(str(e), 120)})") from None
    if not small:
        raise ConfigError(f"{path}: over {MAX_BYTES:,} bytes; a run config is a few kB")
    return text


def _yaml_problem(error: yaml.YAMLError, text: str) -> str:
    """' at line 3, column 7: <what>' for a YAML error (a reader error: by its position)."""
    if isinstance(error, yaml.reader.ReaderError):  # a character YAML does not allow
        before = text[: error.position]
        line, column = before.count("\n") + 1, len(before.rpartition("\n")[2]) + 1
        char = error.character
        code = char if isinstance(char, int) else ord(str(char)[:1] or " ")
        problem = f"character U+{code:04X} is not allowed; remove it"
    else:
        where = getattr(error, "problem_mark", None)
        line, column = (where.line + 1, where.column + 1) if where else (None, None)
        problem = getattr(error, "problem", None) or str(error).partition("\n")[0]
    at = f" at line {line}, column {column}" if line else ""
    return f"{at}: {_clip(str(problem), 120)}"


def _parse(text: str, path: Path) -> Any:
    """Safe-load YAML text; any failure of the reader is one `ConfigError`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML{_yaml_problem(e, text)}") from None
    except RecursionError:
        raise ConfigError(
            f"{path}: nested too deeply to read; a run config nests a few levels"
        ) from None
    except Exception as e:  # PyYAML's constructors raise ValueError, AttributeError, …
        raise ConfigError(
            f"{path}: not valid YAML: {_clip(f'{type(e).__name__}: {e}', 120)}"
        ) from None


def read_yaml(path: str | Path) -> dict:
    """Safe-load a YAML mapping (no Python objects are constructed from the file)."""
    path = Path(path)
    raw = _parse(_text(path), path)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    _shape(raw, str(path))
    return raw


def _value(text: str) -> Any:
    """A command-line value read as YAML, with numbers such as 1e-6 (a string to YAML 1.1)
    read as numbers; text YAML cannot read stays text."""
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except Exception:  # YAMLError, RecursionError, a constructor's ValueError
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, list):
        return [_value(v) if isinstance(v, str) else v for v in value]
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """`key.sub=value` → (['key', 'sub'], value); the value is read as YAML (numbers, lists,
    booleans, null), so `fit.free=[egp_max,dct_capacity]` and `solver.rtol=1e-8` work."""
    if "=" not in text:
        raise ConfigError(f"override {_shown(text)}: write key.sub=value, e.g. solver.rtol=1e-8")
    key, _, value = text.partition("=")
    keys = [k.strip() for k in key.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"override {_shown(text)}: empty key; write key.sub=value")
    return keys, _value(value)


def apply_override(raw: dict, keys: list[str], value: Any, text: str = "") -> dict:
    """Set `raw[k0][k1]… = value` (in place; missing sections are created)."""
    node = raw
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            where = _clip(text or ".".join(keys))
            raise ConfigError(f"override {where}: '{_clip(k, 40)}' is not a section")
        node = child
    node[keys[-1]] = value
    return raw


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    values: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Read, override and validate a run config (`None`: the built-in defaults); `values`
    ({"key.sub": value}, command-line options) are set last."""
    raw = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(raw, keys, value, text)
    for key, value in (values or {}).items():
        apply_override(raw, key.split("."), value, key)
    if overrides:
        source += f" (with overrides {_clip(' '.join(overrides), 120)})"
    return validate(raw, source)


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML (what a run directory stores; loads back to the same)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def grid_points(grid: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    """`["a.b=1,2", "c=x,y"]` → the 4 points of the product, each {key: value}."""
    axes: list[tuple[str, list[Any]]] = []
    for text in grid:
        if "=" not in text:
            raise ConfigError(f"--grid {text!r}: write key=v1,v2,… e.g. solver.rtol=1e-6,1e-8")
        key, _, values = text.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not items:
            raise ConfigError(f"--grid {text!r}: no values after '='")
        axes.append((key.strip(), [_value(v) for v in items]))
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys):
        raise ConfigError("--grid: a key is given twice; give each key once with all its values")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


# the old name of the main job's config loader
def load_run_config(path: Path | None) -> RunConfig:
    return load_config(path)
