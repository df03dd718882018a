"""The coupled model and a protocol as SBML: the equations the JAX code integrates, written out
symbolically so that any SBML tool (AMICI, COPASI, libRoadRunner) simulates the same system.

Nothing is transcribed by hand. The model's and the protocol's own methods are evaluated on
sympy symbols: every submodel is written against an array namespace `xp`
(`MgT2DModel.rates(y, inputs, xp)`), so calling it with `SymbolicNamespace` instead of
`jax.numpy` yields the right-hand side as expressions in the named parameters. Any preset, any
parameter values and any mechanism replaced by a function written with arithmetic and `xp`
export alike; a replacement that needs arrays (an MLP) is refused by name.

The SBML (Level 3 Version 2, no species or reactions):

- every model parameter is a constant `<parameter>` with the model's value, its unit,
  description and source in its notes;
- every state (the model's, then the protocol's controller states) is a non-constant
  parameter with a rate rule; its initial value is the fasting steady state of these
  parameters (and the controller's start), computed by mgjax at export;
- the four exogenous inputs (`glucose_infusion` mmol/min, `insulin_infusion` pmol/min,
  `oral_mg` and `iv_mg` mmol/min) are assignment rules: the protocol's schedule as piecewise
  functions of time (a feedback clamp's infusion as a function of glucose and the controller's
  states), or constant zeros without a protocol;
- every clinical observable that is not a state (`serum_mg`, `homa_ir`, …) is an assignment
  rule in the units of `mgjax.OBSERVABLE_UNITS`.

Time is in minutes from the protocol's start.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import libsbml
import numpy as np
import sbmlmath
import sympy as sp

from ..model import ACCUMULATOR_STATES, OBSERVABLE_UNITS, Inputs, MgT2DModel, is_interval
from ..model._numpy import to_numpy
from ..protocols import AbstractProtocol, fasting
from ..solve._steady_state import steady_state

#: The model's time variable (min) in the symbolic expressions.
TIME = sp.Symbol("time", real=True)
#: The SBML parameter that switches the protocol on (1, the default) or off (0: no inputs,
#: the running integrals and controller states relax to their starts — pre-equilibration).
RUNNING = "protocol_running"
#: Time constant (min) of that relaxation.
RELAXATION_MINUTES = 1.0


class ExportError(ValueError):
    """A model or protocol that cannot be written out symbolically (says which part)."""


def _symbolic(*values: Any) -> bool:
    return any(isinstance(v, sp.Basic) for v in values)


def _as_list(values: Any) -> list:
    return list(values) if isinstance(values, (list, tuple)) else list(np.asarray(values))


class SymbolicNamespace:
    """The array namespace the model and the protocols use (`xp`), on sympy expressions:
    scalars are expressions, vectors Python lists; calls on plain numbers go to NumPy."""

    @staticmethod
    def exp(x):
        return sp.exp(x) if _symbolic(x) else np.exp(x)

    @staticmethod
    def log(x):
        return sp.log(x) if _symbolic(x) else np.log(x)

    @staticmethod
    def sqrt(x):
        return sp.sqrt(x) if _symbolic(x) else np.sqrt(x)

    @staticmethod
    def logaddexp(a, b):
        if not _symbolic(a, b):
            return np.logaddexp(a, b)
        # max(a, b) + log(1 + e^-|a - b|): finite for any a, b (a clamp controller's smooth
        # limit divides by a width of 0.05, far beyond exp's range)
        return sp.Max(a, b) + sp.log(1 + sp.exp(-sp.Abs(a - b)))

    @staticmethod
    def isnan(x):
        return False if _symbolic(x) else np.isnan(x)

    @staticmethod
    def maximum(a, b):
        return sp.Max(a, b) if _symbolic(a, b) else np.maximum(a, b)

    @staticmethod
    def minimum(a, b):
        return sp.Min(a, b) if _symbolic(a, b) else np.minimum(a, b)

    @staticmethod
    def where(condition, a, b):
        if isinstance(condition, (bool, np.bool_)):
            return a if condition else b
        if not _symbolic(condition, a, b):
            return np.where(condition, a, b)
        return sp.Piecewise((a, condition), (b, True))

    @staticmethod
    def piecewise_constant(times, rates, t):
        """`rates[i]` for `times[i] ≤ t < times[i+1]`, 0 before `times[0]` (numeric schedule)."""
        times, rates = np.asarray(times, dtype=float), list(_as_list(rates))
        pieces = []
        for k in range(len(times)):
            end = times[k + 1] if k + 1 < len(times) else np.inf
            rate = sp.sympify(rates[k])
            if end <= times[k] or rate == 0:
                continue
            on = t >= float(times[k]) if np.isinf(end) else (t >= float(times[k])) & (t < end)
            pieces.append((rate, on))
        # a sum of one-piece switches, not one piecewise of many pieces: readers (sympy,
        # sbmlmath) canonicalise a piecewise at a cost that grows steeply with its pieces
        return sp.Add(*[sp.Piecewise((r, on), (0.0, True)) for r, on in pieces])

    @staticmethod
    def stack(values, axis: int = 0):
        values = list(values)
        if _symbolic(*values):
            return values
        return np.stack([np.asarray(v) for v in values], axis=axis)  # object arrays too

    @staticmethod
    def concatenate(parts):
        if not any(_symbolic(*_as_list(p)) for p in parts):
            return np.concatenate([np.asarray(p) for p in parts])
        return [x for p in parts for x in _as_list(p)]

    @staticmethod
    def zeros(n, dtype=None):
        return np.zeros(n)

    @staticmethod
    def zeros_like(x):
        return 0 * x if _symbolic(x) else np.zeros_like(x)

    @staticmethod
    def ones_like(x):
        return sp.Integer(1) if _symbolic(x) else np.ones_like(x)


@dataclasses.dataclass
class SymbolicSystem:
    """The coupled system as expressions: d state/dt = `rates[state]`, with `inputs` and
    `observables` as named expressions; `parameters` the model parameters' values (model
    units), `protocol_parameters` the protocol's magnitudes (`protocol_<field>`,
    `controller_<field>`; the protocol's units)."""

    states: list[str]
    initial: list[float]
    rates: dict[str, sp.Expr]
    parameters: dict[str, float]
    protocol_parameters: dict[str, float]
    inputs: dict[str, sp.Expr]
    observables: dict[str, sp.Expr]


def sbml_observable_id(name: str) -> str:
    """The SBML id of observable `name`: a state's own id, `observed_<name>` where the name
    is taken by an input (`glucose_infusion` is an input in mmol/min and an observable in
    mg/kg/min), else the name."""
    if name in MgT2DModel.state_names():
        return name
    return f"observed_{name}" if name in Inputs._fields else name


def _scalar(name: str, value: Any) -> float:
    array = np.asarray(value, dtype=float)
    if array.ndim:
        raise ExportError(
            f"parameter {name!r} holds {array.shape} values; export one subject's model "
            "(index the batch first)"
        )
    return float(array)


def _symbolic_model(model: MgT2DModel) -> tuple[Any, dict[str, float]]:
    """The model's plain mirror with every parameter replaced by its symbol, and the values."""
    plain = to_numpy(model)
    values = {}
    for info in MgT2DModel.parameter_infos():
        submodel = getattr(plain, info.module)
        values[info.name] = _scalar(info.name, getattr(submodel, info.name))
        setattr(submodel, info.name, sp.Symbol(info.name, real=True))
    return plain, values


def _symbolic_protocol(protocol: AbstractProtocol) -> tuple[Any, dict[str, float]]:
    """The protocol's plain mirror with its finite scalar `magnitudes` (and its controller's)
    replaced by symbols `protocol_<field>` (`controller_<field>`), and their values. A NaN
    magnitude (a clamp's target: the subject's own glucose) keeps its meaning as a literal."""
    plain = to_numpy(protocol)
    values = {}
    parts = [("protocol", protocol, plain)]
    controller = getattr(protocol, "controller", None)
    if controller is not None and getattr(type(controller), "magnitudes", ()):
        parts.append(("controller", controller, plain.controller))
    for prefix, module, mirror in parts:
        for field in type(module).magnitudes:
            value = np.asarray(getattr(module, field), dtype=float)
            if value.ndim or not np.isfinite(value):
                continue
            pid = f"{prefix}_{field}"
            values[pid] = float(value)
            setattr(mirror, field, sp.Symbol(pid, real=True))
    return plain, values


def _start(model: MgT2DModel, protocol: AbstractProtocol, y0: Any) -> np.ndarray:
    """The model's states at t = 0 (the fasting steady state unless given) and the
    controller's."""
    if y0 is None:
        rest = steady_state(model, protocol.basal_inputs(), throw=False)
        if not bool(rest.success):
            raise ExportError("the fasting steady state of this model was not found")
        y0 = rest.y
    y0 = jnp.asarray(y0, dtype=jnp.float64)
    return np.asarray(jnp.concatenate([y0, protocol.controller_init(model, y0)]))


def symbolic_system(
    model: MgT2DModel, protocol: AbstractProtocol | None = None, y0: Any = None
) -> SymbolicSystem:
    """The model under `protocol` (default: fasting, no inputs) as expressions in the named
    parameters, the states and `TIME` (min), starting from `y0` (default the fasting steady
    state)."""
    protocol = fasting() if protocol is None else protocol
    if not isinstance(model, MgT2DModel):
        raise TypeError(f"expected an MgT2DModel, got {type(model).__name__}")
    plain_model, values = _symbolic_model(model)
    plain_protocol, protocol_values = _symbolic_protocol(protocol)
    names = list(MgT2DModel.state_names()) + list(protocol.controller_state_names)
    y = [sp.Symbol(n, real=True) for n in names]
    xp = SymbolicNamespace()
    n_model = len(MgT2DModel.state_names())
    inputs = Inputs(*[sp.Symbol(name, real=True) for name in Inputs._fields])
    running = sp.Symbol(RUNNING, real=True)
    try:
        schedule = plain_protocol.inputs(TIME, y[:n_model], y[n_model:], plain_model, xp)
        # the model's rates and observables read the inputs by name (assignment rules)
        rates = _as_list(plain_model.rates(y[:n_model], inputs, xp))
        controller_rates = _as_list(
            plain_protocol.controller_rates(TIME, y[:n_model], y[n_model:], plain_model, xp)
        )
        controller_start = _as_list(plain_protocol.controller_init(plain_model, y[:n_model], xp))
        observed = plain_model.observables(y[:n_model], inputs, xp)
    except (TypeError, AttributeError) as error:
        raise ExportError(
            "the model or protocol could not be evaluated symbolically "
            f"({type(error).__name__}: {error}); a replaced mechanism must be written with "
            "arithmetic and the `xp` namespace it is given"
        ) from error
    # while the protocol is off (pre-equilibration) the running integrals and the
    # controller's states relax to their starts: the fasting steady state is a steady state
    starts = [0.0] * len(ACCUMULATOR_STATES) + controller_start
    gated = names[n_model - len(ACCUMULATOR_STATES) :]
    for k, (name, start) in enumerate(zip(gated, starts)):
        i = n_model - len(ACCUMULATOR_STATES) + k
        rate = rates[i] if i < n_model else controller_rates[i - n_model]
        relax = (start - sp.Symbol(name, real=True)) / RELAXATION_MINUTES
        value = running * rate + (1 - running) * relax
        if i < n_model:
            rates[i] = value
        else:
            controller_rates[i - n_model] = value
    rates += controller_rates
    observables = {
        sbml_observable_id(name): sp.sympify(expr)
        for name, expr in observed.items()
        if name in OBSERVABLE_UNITS and name not in names
    }
    return SymbolicSystem(
        states=names,
        initial=[float(v) for v in _start(model, protocol, y0)],
        rates={n: sp.sympify(r) for n, r in zip(names, rates)},
        parameters=values,
        protocol_parameters=protocol_values,
        inputs={k: running * sp.sympify(v) for k, v in zip(Inputs._fields, schedule)},
        observables=observables,
    )


# --- SBML ------------------------------------------------------------------------------------
def _check(code: int, what: str) -> None:
    if code != libsbml.LIBSBML_OPERATION_SUCCESS:
        raise ExportError(f"libsbml refused {what}: {libsbml.OperationReturnValue_toString(code)}")


class _Printer(sbmlmath.SBMLMathMLPrinter):
    """SBML MathML with `TIME` as SBML's time symbol (printed, not substituted: rebuilding
    a piecewise schedule of many pieces makes sympy canonicalise it, which is costly)."""

    def _print_Symbol(self, sym):
        if sym == TIME:
            return self._print(sbmlmath.TimeSymbol("time"))
        return super()._print_Symbol(sym)


def _math(expr: sp.Expr) -> libsbml.ASTNode:
    text = _Printer(literals_dimensionless=False).doprint(sp.sympify(expr))
    node = libsbml.readMathMLFromString(text)
    if node is None:
        raise ExportError(f"the expression {expr} has no SBML MathML form")
    return node


def _notes(element: Any, text: str) -> None:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    _check(
        element.setNotes(f'<body xmlns="http://www.w3.org/1999/xhtml"><p>{escaped}</p></body>'),
        "notes",
    )


def _parameter(model: libsbml.Model, pid: str, value: float | None, constant: bool, note: str):
    p = model.createParameter()
    _check(p.setId(pid), f"the id {pid!r}")
    _check(p.setConstant(constant), f"{pid}'s constant flag")
    if value is not None:
        _check(p.setValue(value), f"{pid}'s value")
    if note:
        _notes(p, note)
    return p


def to_sbml(
    model: MgT2DModel,
    protocol: AbstractProtocol | None = None,
    *,
    y0: Any = None,
    model_id: str = "mgjax_mg_t2d",
) -> str:
    """The coupled model under `protocol` (default fasting) as an SBML L3V2 document (a
    string): parameters with the model's values, states as rate rules from `y0` (default
    the fasting steady state), inputs and observables as assignment rules (module docstring).
    """
    return _sbml_document(symbolic_system(model, protocol, y0), model_id)


def _sbml_document(system: SymbolicSystem, model_id: str) -> str:
    """`system` as an SBML L3V2 document (a string)."""
    document = libsbml.SBMLDocument(3, 2)
    sbml = document.createModel()
    _check(sbml.setId(model_id), "the model id")
    _check(sbml.setTimeUnits("dimensionless"), "the time units")
    _notes(
        sbml,
        "The coupled magnesium / type 2 diabetes model of mgjax (docs/model.md): beta-cell, "
        "insulin signalling, renal and whole-body Mg2+, glucose-insulin. Time in minutes; "
        "concentrations mmol/L (glucose, Mg2+) and pmol/L (insulin, C-peptide).",
    )
    infos = {i.name: i for i in MgT2DModel.parameter_infos()}
    for name, value in system.parameters.items():
        info = infos[name]
        _parameter(
            sbml,
            name,
            value,
            True,
            f"{info.module}: {info.description} [{info.unit}]; plausible "
            f"{info.lower:g} to {info.upper:g}; source: {info.source}",
        )
    for pid, value in system.protocol_parameters.items():
        _parameter(sbml, pid, value, True, f"protocol magnitude ({pid}; the protocol's units)")
    _parameter(
        sbml,
        RUNNING,
        1.0,
        True,
        "1: the protocol runs; 0: no inputs, the running integrals and the clamp "
        "controller's states relax to their starts (a PEtab pre-equilibration condition)",
    )
    units = dict(zip(MgT2DModel.state_names(), MgT2DModel.state_units()))
    for name, value in zip(system.states, system.initial):
        _parameter(sbml, name, value, False, f"state [{units.get(name, 'controller state')}]")
    input_units = dict(
        glucose_infusion="mmol/min", insulin_infusion="pmol/min", oral_mg="mmol/min",
        iv_mg="mmol/min", incretin="1",
    )  # fmt: skip
    for name, expr in system.inputs.items():
        _parameter(sbml, name, None, False, f"exogenous input [{input_units[name]}]")
        rule = sbml.createAssignmentRule()
        _check(rule.setVariable(name), f"the rule of {name}")
        _check(rule.setMath(_math(expr)), f"the math of {name}")
    for name, expr in system.observables.items():
        unit = OBSERVABLE_UNITS[name.removeprefix("observed_")]
        _parameter(sbml, name, None, False, f"observable [{unit}]")
        rule = sbml.createAssignmentRule()
        _check(rule.setVariable(name), f"the rule of {name}")
        _check(rule.setMath(_math(expr)), f"the math of {name}")
    for name, expr in system.rates.items():
        rule = sbml.createRateRule()
        _check(rule.setVariable(name), f"the rate rule of {name}")
        _check(rule.setMath(_math(expr)), f"the math of d{name}/dt")
    if document.checkInternalConsistency():
        errors = document.getErrorLog().toString()
        raise ExportError(f"the exported SBML is not consistent: {errors}")
    return libsbml.writeSBMLToString(document)


# --- PEtab ------------------------------------------------------------------------------------
#: Condition ids of an exported problem: the fasting steady state (protocol off) and the run.
REST_CONDITION, PROTOCOL_CONDITION = "fasting_rest", "protocol"


def _observations(observations: Any) -> Any:
    import pandas as pd

    table = pd.DataFrame(observations)
    missing = {"time", "observable", "value"} - set(table.columns)
    if missing:
        raise ExportError(
            f"observations lack the columns {sorted(missing)}; give time (min), observable "
            "(an mgjax observable or state) and value (model units), optionally sigma"
        )
    known = set(OBSERVABLE_UNITS) | set(MgT2DModel.state_names())
    for row, name in enumerate(table["observable"]):
        if name not in known:
            raise ExportError(
                f"observations row {row}: unknown observable {name!r}; known: "
                f"{', '.join(sorted(known))}"
            )
    for column in ("time", "value", *(("sigma",) if "sigma" in table else ())):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() | ~np.isfinite(values)
        if bad.any():
            raise ExportError(
                f"observations row {int(np.flatnonzero(bad)[0])}, column {column}: not a "
                "finite number"
            )
    return table


def _write_model_and_conditions(directory: Any, system: SymbolicSystem, name: str) -> None:
    """The SBML model and PEtab's condition table: the fasting rest (the protocol switched
    off, `RUNNING` = 0: pre-equilibration) and the protocol running."""
    import pandas as pd

    (directory / "model.xml").write_text(_sbml_document(system, name))
    pd.DataFrame({"conditionId": [REST_CONDITION, PROTOCOL_CONDITION], RUNNING: [0.0, 1.0]}).to_csv(
        directory / "conditions.tsv", sep="\t", index=False
    )


def _write_parameters(directory: Any, system: SymbolicSystem, free: dict[str, Any]) -> None:
    """PEtab's parameter table: every model parameter (log10 scale where mgjax fits it on a
    log scale, its plausible bounds, the model's value), the protocol's magnitudes (fixed),
    and `free` estimated: name → None (the parameter's own scale and bounds) or a dict of
    `log`, `lower`, `upper` and `prior` ((mean, sd) of log θ, or None)."""
    import pandas as pd

    infos = {i.name: i for i in MgT2DModel.parameter_infos()}
    rows = []
    for pid, value in system.parameters.items():
        info = infos[pid]
        row = dict(
            parameterId=pid,
            parameterName=f"{info.description} [{info.unit}]",
            parameterScale="log10" if info.log_scale and info.lower > 0 else "lin",
            lowerBound=info.lower,
            upperBound=info.upper,
            nominalValue=value,
            estimate=int(pid in free),
            objectivePriorType=None,
            objectivePriorParameters=None,
        )
        given = free.get(pid)
        if given is not None:
            row.update(
                parameterScale="log10" if given["log"] else "lin",
                lowerBound=given["lower"],
                upperBound=given["upper"],
            )
            if given["prior"] is not None:
                # mgjax's prior: log θ ~ N(mean, sd), PEtab's logNormal on the linear value
                mean, sd = given["prior"]
                row.update(
                    objectivePriorType="logNormal", objectivePriorParameters=f"{mean!r};{sd!r}"
                )
        rows.append(row)
    for pid, value in system.protocol_parameters.items():
        rows.append(
            dict(
                parameterId=pid,
                parameterName=f"protocol magnitude {pid}",
                parameterScale="lin",
                lowerBound=value,
                upperBound=value,
                nominalValue=value,
                estimate=0,
            )
        )
    frame = pd.DataFrame(rows)
    if frame["objectivePriorType"].isna().all():
        frame = frame.drop(columns=["objectivePriorType", "objectivePriorParameters"])
    frame.to_csv(directory / "parameters.tsv", sep="\t", index=False)


def _write_problem_file(directory: Any, name: str) -> Any:
    """The PEtab v1 YAML naming the tables this module writes in `directory`; its path."""
    import yaml

    spec = {
        "format_version": 1,
        "parameter_file": "parameters.tsv",
        "problems": [
            {
                "sbml_files": ["model.xml"],
                "condition_files": ["conditions.tsv"],
                "measurement_files": ["measurements.tsv"],
                "observable_files": ["observables.tsv"],
            }
        ],
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def to_petab(
    model: MgT2DModel,
    protocol: AbstractProtocol | None,
    observations: Any,
    directory: Any,
    *,
    estimate: Any = (),
    name: str = "mgjax_export",
) -> Any:
    """One subject's experiment as a PEtab v1 problem in `directory` (returns the YAML path).

    - `observations`: a table (DataFrame or records) of `time` (min from the protocol's
      start), `observable` (an mgjax observable or state), `value` (model units) and
      optionally `sigma` (the measurement's standard deviation, default 1);
    - `estimate`: the model parameters to estimate (PEtab `estimate = 1`), on the log10
      scale where mgjax fits them on a log scale, within their plausible bounds; the others
      stay at the model's values.

    Every measurement is simulated from the fasting steady state of the current parameters
    (pre-equilibration under the condition `fasting_rest`, where `protocol_running` = 0),
    then under `protocol`."""
    from pathlib import Path

    import pandas as pd

    table = _observations(observations)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    infos = {i.name: i for i in MgT2DModel.parameter_infos()}
    unknown = [p for p in estimate if p not in infos]
    if unknown:
        raise ExportError(f"cannot estimate {unknown}: not model parameters")
    system = symbolic_system(model, protocol)
    _write_model_and_conditions(directory, system, name)
    names = list(dict.fromkeys(table["observable"]))
    pd.DataFrame(
        {
            "observableId": [f"obs_{n}" for n in names],
            "observableFormula": [sbml_observable_id(n) for n in names],
            "noiseFormula": [f"noiseParameter1_obs_{n}" for n in names],
            "noiseDistribution": ["normal"] * len(names),
        }
    ).to_csv(directory / "observables.tsv", sep="\t", index=False)
    sigma = table["sigma"] if "sigma" in table else pd.Series(1.0, index=table.index)
    pd.DataFrame(
        {
            "observableId": [f"obs_{n}" for n in table["observable"]],
            "preequilibrationConditionId": REST_CONDITION,
            "simulationConditionId": PROTOCOL_CONDITION,
            "time": table["time"].astype(float),
            "measurement": table["value"].astype(float),
            "noiseParameters": sigma.astype(float),
        }
    ).to_csv(directory / "measurements.tsv", sep="\t", index=False)
    _write_parameters(directory, system, {name: None for name in estimate})
    return _write_problem_file(directory, name)


def _at_rest(protocol: Any) -> bool:
    """Whether `protocol` only observes the fasting steady state (no inputs, no solve)."""
    return bool(getattr(protocol, "at_steady_state", False))


def _rest_observable(name: str) -> str:
    """The instantaneous observable that equals `name` at a steady state (a 24-h collection
    there is the excretion rate × one day)."""
    return {"urinary_mg_24h": "urinary_mg"}.get(name, name)


def problem_to_petab(problem: Any, directory: Any, *, name: str = "mgjax_subject") -> Any:
    """One subject's `mgjax.fit.FitProblem` as a PEtab v1 problem in `directory` (returns
    the YAML path): the same data, error model, free parameters, bounds, scales and priors,
    so that a PEtab tool (pyPESTO + AMICI + fides, `mgjax petab`) fits what `mgjax.fit.fit`
    fits.

    One PEtab problem holds one SBML model, so a subject may have one dynamic protocol (a
    clamp, an IVGTT, a trial) besides any number of fasting-lab experiments; those are
    observed at the pre-equilibrated fasting steady state (condition `fasting_rest`), where a
    24-h urine collection is the excretion rate × one day. The error model
    σ = √(a² + (b·prediction)²) becomes the noise formula with a; b as each measurement's
    noise parameters (a measurement's own σ: σ; 0). Refused, with the reason: a second
    dynamic protocol, a forced-glucose series, estimated error-model parameters, a 24-h
    collection during a dynamic protocol."""
    from pathlib import Path

    import pandas as pd

    from ..fit import FitProblem
    from ..protocols import AbstractProtocol

    if not isinstance(problem, FitProblem):
        raise ExportError(f"expected an mgjax.fit.FitProblem, got {type(problem).__name__}")
    if problem.error_parameters:
        raise ExportError(
            "error-model parameters are estimated (error_parameters "
            f"{list(problem.error_parameters)}); export a problem with a fixed error model"
        )
    experiments = list(problem.experiments)
    for e in experiments:
        if not isinstance(e.protocol, AbstractProtocol):
            raise ExportError(
                f"a {type(e.protocol).__name__} experiment (forced-glucose secretion) has no "
                "SBML form: the beta-cell alone driven by a glucose series"
            )
    dynamic = [e for e in experiments if not _at_rest(e.protocol)]
    if len(dynamic) > 1:
        kinds = ", ".join(type(e.protocol).__name__ for e in dynamic)
        raise ExportError(
            f"this subject has {len(dynamic)} dynamic protocols ({kinds}); a PEtab problem "
            "holds one SBML model: export one problem per protocol"
        )
    protocol = dynamic[0].protocol if dynamic else fasting()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = problem.base_model
    system = symbolic_system(model, protocol)
    _write_model_and_conditions(directory, system, name)

    observables: dict[str, str] = {}
    rows = []
    for e in experiments:
        rest = _at_rest(e.protocol)
        times = np.asarray(e.times)
        sigma = np.asarray(e.sigma)
        for k in np.flatnonzero(np.asarray(e.mask)):
            observed = e.observable_names[int(e.observable_index[k])]
            if is_interval(observed) and not rest:
                raise ExportError(
                    f"{observed} during a {type(e.protocol).__name__} is a difference of a "
                    "running integral between two times, which PEtab v1 cannot observe"
                )
            formula = sbml_observable_id(_rest_observable(observed) if rest else observed)
            obs_id = f"obs_{formula}"
            observables[obs_id] = formula
            error = problem.error_models[observed]
            noise = (
                (float(sigma[k]), 0.0)
                if np.isfinite(sigma[k])
                else (float(error.additive), float(error.proportional))
            )
            rows.append(
                dict(
                    observableId=obs_id,
                    preequilibrationConditionId=REST_CONDITION,
                    simulationConditionId=REST_CONDITION if rest else PROTOCOL_CONDITION,
                    time=float(times[int(e.time_index[k])]),
                    measurement=float(e.values[k]),
                    noiseParameters=f"{noise[0]!r};{noise[1]!r}",
                )
            )
    pd.DataFrame(
        {
            "observableId": list(observables),
            "observableFormula": list(observables.values()),
            "noiseFormula": [
                f"sqrt(noiseParameter1_{o}^2 + (noiseParameter2_{o} * {f})^2)"
                for o, f in observables.items()
            ],
            "noiseDistribution": ["normal"] * len(observables),
        }
    ).to_csv(directory / "observables.tsv", sep="\t", index=False)
    pd.DataFrame(rows).to_csv(directory / "measurements.tsv", sep="\t", index=False)

    free = {}
    for i, pid in enumerate(problem.free):
        mean, sd = float(problem.prior_mean[i]), float(problem.prior_sd[i])
        free[pid] = dict(
            log=problem.transforms[i] in ("log", "loglogit"),
            lower=float(problem.lower[i]),
            upper=float(problem.upper[i]),
            prior=(mean, sd) if np.isfinite(mean) else None,
        )
    _write_parameters(directory, system, free)
    return _write_problem_file(directory, name)
