"""PEtab v1 YAML → `PetabProblem`: the tables read with the reference `petab` library, the SBML
model with libsbml/sbmlmath, the equations generated as JAX code once per model."""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from pathlib import Path
from typing import Any, NamedTuple

import diffrax as dfx
import jax.numpy as jnp
import numpy as np
import pandas as pd
import sympy as sp
from jaxtyping import Array, Float, Int

from ..solve._solve import SolverOptions
from ._codegen import generate
from ._problem import PRIOR_TYPES, SCALES, PetabModel, PetabProblem, conservation_laws
from ._sbml import TIME, SymbolicODE, UnsupportedSBMLError, read_sbml


class PetabError(ValueError):
    """A PEtab problem that cannot be imported as written (names file, row/column, fix)."""


def _real(expr: sp.Expr) -> sp.Expr:
    return expr.xreplace(
        {s: sp.Symbol(s.name, real=True) for s in expr.free_symbols if isinstance(s, sp.Symbol)}
    )


def _has_time_outside_conditions(expr: sp.Basic) -> bool:
    if isinstance(expr, sp.core.relational.Relational):
        return False
    if expr == TIME:
        return True
    return any(_has_time_outside_conditions(a) for a in expr.args)


def _load_tables(yaml_path: Path):
    import petab.v1 as petab

    if not yaml_path.is_file():
        raise PetabError(f"{yaml_path}: no such PEtab problem file")
    try:
        config = petab.yaml.load_yaml(yaml_path)
    except Exception as error:  # noqa: BLE001
        raise PetabError(f"{yaml_path}: not a readable PEtab YAML ({error})") from error
    if str(config.get("format_version")) not in ("1", "1.0.0"):
        raise PetabError(
            f"{yaml_path}: format_version {config.get('format_version')!r}; mgjax reads PEtab v1"
        )
    problems = config.get("problems") or []
    if len(problems) != 1 or len(problems[0].get("sbml_files", [])) != 1:
        raise PetabError(f"{yaml_path}: exactly one problem with one SBML model is supported")
    sbml_path = yaml_path.parent / problems[0]["sbml_files"][0]
    try:
        problem = petab.Problem.from_yaml(str(yaml_path))
    except Exception as error:  # noqa: BLE001
        raise PetabError(f"{yaml_path}: the PEtab library could not read it ({error})") from error
    return problem, sbml_path


def _lint(problem, yaml_path: Path) -> None:
    """Run the reference linter; its errors (logged by petab) become one message."""
    import petab.v1 as petab

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.ERROR:
                messages.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("petab")
    logger.addHandler(handler)
    try:
        failed = petab.lint.lint_problem(problem)
    finally:
        logger.removeHandler(handler)
    if failed:
        detail = "; ".join(messages[:3]) or "see the petab log"
        raise PetabError(f"{yaml_path}: the PEtab linter found errors: {detail}")


def _number_or_id(value: Any, parameter_index: dict[str, int], where: str) -> tuple[float, int]:
    """A table entry → (constant, -1) or (nan, index of a parameter-table parameter)."""
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return float(value), -1
    text = str(value).strip()
    try:
        return float(text), -1
    except ValueError:
        pass
    if text in parameter_index:
        return math.nan, parameter_index[text]
    raise PetabError(
        f"{where}: {text!r} is neither a number nor a parameter of the parameter table; add it "
        "to the parameter table or use a number"
    )


def _read_formulas(observable_df: pd.DataFrame, files) -> tuple[list, list[str]]:
    """The observable and noise formulas, (observable id, column, expression) in the order
    [observables..., noises...], and the placeholder names in order of appearance."""
    import petab.v1 as petab
    from petab.v1.math import sympify_petab

    placeholders: list[str] = []
    formulas = []
    for kind, column in (("observable", "observableFormula"), ("noise", "noiseFormula")):
        for obs_id, row in observable_df.iterrows():
            text = row.get(column)
            if kind == "noise" and (text is None or (isinstance(text, float) and np.isnan(text))):
                raise PetabError(
                    f"{files['observable']}: observable {obs_id!r} has no noiseFormula; give a "
                    "number or a noise parameter"
                )
            for name in petab.get_formula_placeholders(str(text), obs_id, kind):
                if name not in placeholders:
                    placeholders.append(name)
            try:
                expr = _real(sp.sympify(sympify_petab(text)))
            except Exception as error:  # noqa: BLE001
                raise PetabError(
                    f"{files['observable']}: observable {obs_id!r}, column {column}: cannot read "
                    f"{text!r} ({error})"
                ) from error
            formulas.append((obs_id, column, expr))
    return formulas, placeholders


def _resolve_symbols(
    expr: sp.Expr, where: str, known: set[str], assignments: dict, by_name: dict
) -> sp.Expr:
    """`expr` with its symbols that are not states or model parameters (`known`) replaced:
    an SBML assignment by its formula (`assignments`, by symbol), else a placeholder, a
    parameter-table id or time by the generated function's argument (`by_name`)."""
    replacements = {}
    for symbol in expr.free_symbols:
        name = symbol.name
        if name in known:
            continue
        if symbol in assignments:
            replacements[symbol] = assignments[symbol]
        elif name in by_name:
            replacements[symbol] = by_name[name]
        else:
            raise PetabError(
                f"{where}: unknown symbol {name!r} (not a species, model parameter, assignment, "
                "parameter-table parameter or placeholder)"
            )
    return expr.xreplace(replacements)


def _observable_functions(ode: SymbolicODE, observable_df: pd.DataFrame, parameter_ids, files):
    """The observable and noise formulas as one generated function
    measure(time, x, p, theta, z) -> [h_1..h_n, σ_1..σ_n], the placeholder names (z) and the
    formulas in the generated function's symbols."""
    formulas, placeholders = _read_formulas(observable_df, files)
    state = {s: sp.Symbol(s, real=True) for s in ode.states}
    model_parameter = {p: sp.Symbol(p, real=True) for p in ode.parameters}
    theta_symbols = [sp.Symbol(f"theta__{i}", real=True) for i in range(len(parameter_ids))]
    z_symbols = [sp.Symbol(f"z__{i}", real=True) for i in range(len(placeholders))]
    assignments = {sp.Symbol(k, real=True): v for k, v in ode.assignments.items()}
    # precedence by name: a placeholder, then a parameter-table id, then time
    by_name = {"t": TIME, "time": TIME, **dict(zip(parameter_ids, theta_symbols))}
    by_name.update(zip(placeholders, z_symbols))
    known = set(state) | set(model_parameter)
    exprs = [
        _resolve_symbols(
            expr,
            f"{files['observable']}: observable {obs_id!r}, column {column}",
            known,
            assignments,
            by_name,
        )
        for obs_id, column, expr in formulas
    ]
    arguments = [
        TIME,
        [state[s] for s in ode.states],
        [model_parameter[p] for p in ode.parameters],
        theta_symbols,
        z_symbols,
    ]
    return generate("measure", arguments, exprs), placeholders, exprs


@dataclasses.dataclass(frozen=True)
class _Parameters:
    """The parameter table: every id (θ), nominal values (linear; an estimated one without a
    nominal value starts at its bounds' (geometric) mean), and per estimated parameter its
    scale, bounds and prior."""

    ids: list[str]
    index: dict[str, int]
    nominal: list[float]
    estimated: list[str]
    scale_code: list[int]
    transforms: list[str]
    lower: list[float]
    upper: list[float]
    prior_code: list[int]
    prior_a: list[float]
    prior_b: list[float]

    @property
    def least_squares(self) -> bool:
        """No Laplace prior (the objective is a sum of squares plus normal priors)."""
        laplace = ("laplace", "logLaplace", "parameterScaleLaplace")
        return not any(PRIOR_TYPES[c] in laplace for c in self.prior_code)


def _nominal_values(parameter_df: pd.DataFrame) -> list[float]:
    theta_nominal = []
    for pid, row in parameter_df.iterrows():
        nominal = row.get("nominalValue", np.nan)
        if (pd.isna(nominal)) and not int(row.get("estimate", 1)):
            raise PetabError(f"parameter table, parameter {pid!r}: fixed but no nominalValue")
        theta_nominal.append(float(nominal) if not pd.isna(nominal) else np.nan)
    return theta_nominal


def _scale_and_bounds(pid: str, row: pd.Series) -> tuple[str, float, float]:
    scale = str(row.get("parameterScale", "lin"))
    if scale not in SCALES:
        raise PetabError(f"parameter table, {pid!r}: parameterScale {scale!r} not lin/log/log10")
    lb, ub = float(row["lowerBound"]), float(row["upperBound"])
    if not (np.isfinite(lb) and np.isfinite(ub) and lb < ub):
        raise PetabError(
            f"parameter table, {pid!r}: bounds [{lb}, {ub}] must be finite with lower < upper"
        )
    if scale != "lin" and lb <= 0:
        raise PetabError(f"parameter table, {pid!r}: {scale} scale needs lowerBound > 0")
    return scale, lb, ub


def _prior(pid: str, row: pd.Series) -> tuple[str, float, float]:
    kind = row.get("objectivePriorType", np.nan)
    kind = "none" if pd.isna(kind) else str(kind)
    if kind not in PRIOR_TYPES:
        raise PetabError(f"parameter table, {pid!r}: objectivePriorType {kind!r} unknown")
    a, b = 0.0, 1.0
    if kind != "none":
        values = [float(v) for v in str(row["objectivePriorParameters"]).split(";")]
        a, b = values
    return kind, a, b


def _read_parameters(parameter_df: pd.DataFrame) -> _Parameters:
    ids = list(parameter_df.index)
    index = {p: i for i, p in enumerate(ids)}
    nominal = _nominal_values(parameter_df)
    estimated = [p for p, row in parameter_df.iterrows() if int(row.get("estimate", 0)) == 1]
    table = _Parameters(ids, index, nominal, estimated, [], [], [], [], [], [], [])
    for pid in estimated:
        row = parameter_df.loc[pid]
        scale, lb, ub = _scale_and_bounds(pid, row)
        table.scale_code.append(SCALES.index(scale))
        table.transforms.append("loglogit" if scale != "lin" else "logit")
        table.lower.append(lb)
        table.upper.append(ub)
        kind, a, b = _prior(pid, row)
        table.prior_code.append(PRIOR_TYPES.index(kind))
        table.prior_a.append(a)
        table.prior_b.append(b)
        if np.isnan(nominal[index[pid]]):
            nominal[index[pid]] = math.sqrt(lb * ub) if scale != "lin" else lb
    return table


@dataclasses.dataclass(frozen=True)
class _Conditions:
    """The condition table as arrays over (condition, model parameter) and (condition,
    state): a constant, or the index of a parameter-table parameter (−1: the constant)."""

    ids: list[str]
    row: dict[str, int]
    const: np.ndarray
    ref: np.ndarray
    state_const: np.ndarray
    state_ref: np.ndarray
    state_set: np.ndarray


def _read_conditions(condition_df: pd.DataFrame, ode: SymbolicODE, parameter_index) -> _Conditions:
    ids = list(condition_df.index)
    n_x = len(ode.states)
    default_const = np.asarray(ode.parameter_values, dtype=float)
    default_ref = np.asarray([parameter_index.get(p, -1) for p in ode.parameters], dtype=int)
    conditions = _Conditions(
        ids=ids,
        row={c: i for i, c in enumerate(ids)},
        const=np.tile(default_const, (len(ids), 1)),
        ref=np.tile(default_ref, (len(ids), 1)),
        state_const=np.zeros((len(ids), n_x)),
        state_ref=-np.ones((len(ids), n_x), dtype=int),
        state_set=np.zeros((len(ids), n_x), dtype=bool),
    )
    for column in condition_df.columns:
        if column == "conditionName":
            continue
        for cid, value in condition_df[column].items():
            _set_condition_entry(conditions, ode, parameter_index, cid, column, value)
    _check_parameters_resolved(conditions, ode, default_const, default_ref)
    return conditions


def _set_condition_entry(conditions: _Conditions, ode, parameter_index, cid, column, value):
    """One cell of the condition table: a model parameter's or a state's value (NaN: keep
    the model's, or the pre-equilibrated, value)."""
    where = f"condition table, condition {cid!r}, column {column!r}"
    i = conditions.row[cid]
    if column in ode.parameters:
        if pd.isna(value):
            return
        j = ode.parameters.index(column)
        conditions.const[i, j], conditions.ref[i, j] = _number_or_id(value, parameter_index, where)
    elif column in ode.states:
        if pd.isna(value):
            return  # NaN: keep the pre-equilibrated / model initial value
        j = ode.states.index(column)
        conditions.state_const[i, j], conditions.state_ref[i, j] = _number_or_id(
            value, parameter_index, where
        )
        conditions.state_set[i, j] = True
    else:
        raise PetabError(
            f"condition table: column {column!r} is not a parameter, compartment or "
            "species of the SBML model (or it is set by a rule); remove it or fix its id"
        )


def _check_parameters_resolved(conditions: _Conditions, ode, default_const, default_ref):
    unresolved = [
        ode.parameters[j]
        for j in range(len(ode.parameters))
        if np.isnan(default_const[j])
        and default_ref[j] < 0
        and np.any(np.isnan(conditions.const[:, j]) & (conditions.ref[:, j] < 0))
    ]
    if unresolved:
        raise PetabError(
            f"SBML parameter {unresolved[0]!r} has no value and is not set by the parameter or "
            "condition table"
        )


@dataclasses.dataclass(frozen=True)
class _Observables:
    """The observable table: the generated `measure` function, its placeholders, the formulas
    (observables then noises) and each observable's transformation and noise distribution."""

    measure: Any
    placeholders: list[str]
    formulas: list[sp.Expr]
    ids: list[str]
    transform_of: dict[str, int]
    laplace_of: dict[str, bool]
    table: pd.DataFrame


def _read_observables(ode: SymbolicODE, observable_df: pd.DataFrame, parameter_ids, files):
    measure, placeholders, formulas = _observable_functions(
        ode, observable_df, parameter_ids, files
    )
    transform_of, laplace_of = {}, {}
    for obs_id, row in observable_df.iterrows():
        transformation = row.get("observableTransformation", "lin")
        transformation = "lin" if pd.isna(transformation) else str(transformation)
        distribution = row.get("noiseDistribution", "normal")
        distribution = "normal" if pd.isna(distribution) else str(distribution)
        if transformation not in SCALES or distribution not in ("normal", "laplace"):
            raise PetabError(
                f"observable table, {obs_id!r}: {transformation}/{distribution} unsupported "
                "(observableTransformation lin|log|log10, noiseDistribution normal|laplace)"
            )
        transform_of[obs_id] = SCALES.index(transformation)
        laplace_of[obs_id] = distribution == "laplace"
    ids = list(observable_df.index)
    return _Observables(
        measure, placeholders, formulas, ids, transform_of, laplace_of, observable_df
    )


@dataclasses.dataclass(frozen=True)
class _Measurements:
    """The measurement table as rows: simulation (pre-equilibration, condition) pairs, the
    distinct times, and per row its simulation, time, observable, placeholder values
    (constant, or parameter-table index; −1: the constant) and measured value."""

    simulations: list[tuple[str, str]]
    preequilibrations: list[str]
    times: list[float]
    rows_sim: list[int]
    rows_time: list[int]
    rows_obs: list[int]
    z_const: np.ndarray  # (rows, placeholders)
    z_ref: np.ndarray  # (rows, placeholders)
    values: list[float]


class _Row(NamedTuple):
    simulation: tuple[str, str]
    time: float
    observable: str
    z_const: np.ndarray
    z_ref: np.ndarray
    value: float


def _read_measurements(
    measurement_df: pd.DataFrame, observables: _Observables, condition_row, parameter_index
) -> _Measurements:
    df = measurement_df.reset_index(drop=True)
    if "preequilibrationConditionId" not in df.columns:
        df["preequilibrationConditionId"] = np.nan
    times = _measurement_times(df)
    rows = [
        _measurement_row(row, k, df.columns, observables, condition_row, parameter_index)
        for k, row in df.iterrows()
    ]
    if not rows:
        raise PetabError("measurement table: no measurements")
    pairs = [r.simulation for r in rows]
    simulations = list(dict.fromkeys(pairs))  # in order of first appearance
    shape = (len(rows), len(observables.placeholders))
    return _Measurements(
        simulations=simulations,
        preequilibrations=list(dict.fromkeys(pre for pre, _ in pairs if pre)),
        times=times,
        rows_sim=[simulations.index(pair) for pair in pairs],
        rows_time=[times.index(r.time) for r in rows],
        rows_obs=[observables.ids.index(r.observable) for r in rows],
        z_const=np.reshape([r.z_const for r in rows], shape),
        z_ref=np.reshape([r.z_ref for r in rows], shape),
        values=[r.value for r in rows],
    )


def _measurement_times(df: pd.DataFrame) -> list[float]:
    times = sorted({float(t) for t in df["time"]})
    if any(not np.isfinite(t) for t in times):
        bad = int(np.flatnonzero(~np.isfinite(df["time"].astype(float)))[0])
        raise PetabError(
            f"measurement table, row {bad + 2}: time {df['time'][bad]}: steady-state "
            "measurements (time inf) are not supported; measure at a finite time"
        )
    if times and times[0] < 0:
        raise PetabError(
            "measurement table: negative measurement time; PEtab simulations start at 0"
        )
    return times


def _measurement_row(row, k, columns, observables: _Observables, condition_row, parameter_index):
    """Row `k` (0-based) of the measurement table, checked."""
    where = f"measurement table, row {k + 2}"
    obs_id = row["observableId"]
    simulation = _simulation_of(row, where, observables, condition_row)
    value = _measured_value(row, where, obs_id, observables)
    zc, zr = _placeholder_values(row, where, obs_id, columns, observables, parameter_index)
    return _Row(simulation, float(row["time"]), obs_id, zc, zr, value)


def _simulation_of(row: pd.Series, where: str, observables: _Observables, condition_row):
    """(pre-equilibration condition or "", simulation condition) of a measurement row."""
    obs_id = row["observableId"]
    if obs_id not in observables.ids:
        raise PetabError(
            f"{where}: unknown observableId {obs_id!r}; add it to the observable table"
        )
    pre = row["preequilibrationConditionId"]
    pre = "" if pd.isna(pre) else str(pre)
    sim = str(row["simulationConditionId"])
    for c in (pre, sim):
        if c and c not in condition_row:
            raise PetabError(f"{where}: condition {c!r} is not in the condition table")
    return pre, sim


def _measured_value(row: pd.Series, where: str, obs_id: str, observables: _Observables) -> float:
    value = float(row["measurement"])
    if not np.isfinite(value):
        raise PetabError(f"{where}: measurement {row['measurement']!r} is not a finite number")
    transform = observables.transform_of[obs_id]
    if transform and value <= 0:
        raise PetabError(
            f"{where}: measurement {value} of {obs_id!r} must be > 0 on its "
            f"{SCALES[transform]} scale"
        )
    return value


def _placeholder_values(row, where, obs_id, columns, observables: _Observables, parameter_index):
    """A measurement row's observable and noise parameters: (constants, parameter-table
    indices; −1: the constant), one entry per placeholder of the problem."""
    import petab.v1 as petab

    n = len(observables.placeholders)
    zc, zr = np.zeros(n), -np.ones(n, dtype=int)
    for kind, column in (("observable", "observableParameters"), ("noise", "noiseParameters")):
        expected = petab.get_formula_placeholders(
            str(observables.table.loc[obs_id, f"{kind}Formula"]), obs_id, kind
        )
        given = (
            petab.split_parameter_replacement_list(row.get(column, np.nan))
            if column in columns
            else []
        )
        if len(given) != len(expected):
            raise PetabError(
                f"{where}, column {column}: {len(given)} value(s) for the {len(expected)} "
                f"placeholder(s) {expected} of {obs_id!r}"
            )
        for name, value_or_id in zip(expected, given):
            j = observables.placeholders.index(name)
            zc[j], zr[j] = _number_or_id(value_or_id, parameter_index, f"{where}, column {column}")
    return zc, zr


@dataclasses.dataclass(frozen=True)
class _Inner:
    """Parameters optimised in closed form (`hierarchical=True`): their ids and kinds
    ("scaling" or "noise"), and per measurement row the index of the one scaling it and of the
    one that is its σ (−1: none)."""

    ids: list[str]
    kinds: list[str]
    row_scale_group: np.ndarray
    row_sigma_group: np.ndarray

    @classmethod
    def none(cls, n_rows: int) -> _Inner:
        return cls([], [], -np.ones(n_rows, dtype=int), -np.ones(n_rows, dtype=int))


def _hierarchical_parameters(
    ode: SymbolicODE,
    parameters: _Parameters,
    conditions: _Conditions,
    observables: _Observables,
    measurements: _Measurements,
) -> _Inner:
    """Estimated parameters with a closed-form optimum given the simulation: used only as the
    override of an observable placeholder the formula is proportional to (lin scale, normal
    noise, all its rows sharing one noise source), or only as a whole noise formula (normal
    noise); never in the model, the conditions, a formula directly, or with a prior."""
    inner = _Inner.none(len(measurements.values))
    model_symbols, formula_thetas = _symbols_in_use(ode, observables.formulas)
    for k, pid in enumerate(parameters.estimated):
        q = parameters.index[pid]
        if _used_beyond_placeholders(
            pid, k, parameters, conditions, ode, model_symbols, formula_thetas
        ):
            continue
        rows, columns = np.nonzero(measurements.z_ref == q)
        if rows.size == 0:
            continue
        kind = _placeholder_kind(rows, columns, observables, measurements)
        if kind is None:
            continue
        rows = np.unique(rows)
        if kind == "scaling":
            # all rows it scales must share one σ (then the optimum does not depend on σ)
            if not _one_noise_source(rows, observables, measurements):
                continue
            inner.row_scale_group[rows] = len(inner.ids)
        else:
            inner.row_sigma_group[rows] = len(inner.ids)
        inner.ids.append(pid)
        inner.kinds.append(kind)
    return inner


def _symbols_in_use(ode: SymbolicODE, formulas: list[sp.Expr]) -> tuple[set[str], set[str]]:
    """(names in the model's equations, parameter-table symbols theta__q in the formulas)."""
    model_symbols = set()
    for expr in list(ode.rhs) + list(ode.initial) + list(ode.switch_times):
        model_symbols |= {s.name for s in expr.free_symbols}
    formula_thetas = set()
    for expr in formulas:
        formula_thetas |= {s.name for s in expr.free_symbols if s.name.startswith("theta__")}
    return model_symbols, formula_thetas


def _used_beyond_placeholders(
    pid, k, parameters: _Parameters, conditions: _Conditions, ode, model_symbols, formula_thetas
) -> bool:
    """Whether estimated parameter `pid` (the k-th) has a prior or appears in the model, a
    formula or the condition table (other than as its own model parameter's default)."""
    q = parameters.index[pid]
    return bool(
        PRIOR_TYPES[parameters.prior_code[k]] != "none"
        or pid in model_symbols
        or f"theta__{q}" in formula_thetas
        or any(
            np.any(conditions.ref[:, j] == q)
            for j, name in enumerate(ode.parameters)
            if name != pid or name in model_symbols
        )
        or np.any(conditions.state_ref == q)
    )


def _placeholder_kind(rows, columns, observables: _Observables, measurements: _Measurements):
    """ "scaling" or "noise" if every placeholder (rows, columns) a parameter overrides is a
    factor of its observable formula (lin scale, normal noise) or a whole noise formula
    (normal noise), all the same kind; None otherwise."""
    n_obs = len(observables.ids)
    observable_exprs, noise_exprs = observables.formulas[:n_obs], observables.formulas[n_obs:]
    kinds = set()
    for i, j in zip(rows, columns):
        o = measurements.rows_obs[i]
        obs = observables.ids[o]
        z = sp.Symbol(f"z__{j}", real=True)
        if observables.placeholders[j].startswith("observableParameter"):
            expr = observable_exprs[o]
            g = sp.diff(expr, z)
            proportional = z not in g.free_symbols and sp.simplify(expr - z * g) == 0
            ok = (
                proportional
                and observables.transform_of[obs] == 0
                and not observables.laplace_of[obs]
            )
            kinds.add("scaling" if ok else "no")
        else:
            ok = noise_exprs[o] == z and not observables.laplace_of[obs]
            kinds.add("noise" if ok else "no")
    if len(kinds) != 1 or "no" in kinds:
        return None
    return kinds.pop()


def _one_noise_source(rows, observables: _Observables, measurements: _Measurements) -> bool:
    """Whether the measurement `rows` share one σ: one noise placeholder set to the same
    constant or parameter in every row."""
    noise_exprs = observables.formulas[len(observables.ids) :]
    z_ref, z_const = measurements.z_ref, measurements.z_const
    noise_sources = set()
    for i in rows:
        expr = noise_exprs[measurements.rows_obs[i]]
        zs = sorted(s.name for s in expr.free_symbols if s.name.startswith("z__"))
        if len(zs) != 1 or expr != sp.Symbol(zs[0], real=True):
            noise_sources.add(("formula", str(expr)))
            continue
        j = int(zs[0][3:])
        noise_sources.add(
            ("ref", int(z_ref[i, j])) if z_ref[i, j] >= 0 else ("c", float(z_const[i, j]))
        )
    return len(noise_sources) == 1 and next(iter(noise_sources))[0] != "formula"


def _generated_model(
    ode: SymbolicODE, observables: _Observables, implicit_steady_state: bool
) -> PetabModel:
    """The model's right-hand side, initial state and switch times as generated JAX code,
    with the observables' `measure` and (autonomous models) the conservation laws."""
    x_symbols, p_symbols = ode.state_symbols, ode.parameter_symbols
    rhs = generate("rhs", [TIME, x_symbols, p_symbols], ode.rhs)
    initial = generate("initial", [p_symbols], ode.initial)
    switch = generate("switch_times", [p_symbols], ode.switch_times) if ode.switch_times else None
    time_dependent = any(_has_time_outside_conditions(e) for e in ode.rhs)
    return PetabModel(
        rhs=rhs,
        initial=initial,
        switch_times=switch,
        measure=observables.measure,
        n_observables=len(observables.ids),
        time_dependent=time_dependent,
        state_ids=tuple(ode.states),
        parameter_ids=tuple(ode.parameters),
        observable_ids=tuple(observables.ids),
        conservation=None
        if time_dependent or not implicit_steady_state
        else conservation_laws(rhs, len(ode.states), len(ode.parameters)),
    )


def _default_options() -> SolverOptions:
    """Rodas4, rtol 1e-8, atol 1e-12 (near AMICI's defaults), forward mode (for the
    Levenberg–Marquardt and Gauss–Newton Jacobians)."""
    return SolverOptions(
        rtol=1e-8,
        atol=1e-12,
        pcoeff=0.0,
        icoeff=1.0,
        max_steps=10_000,
        adjoint=dfx.ForwardMode(),
    )


def _i64(x: Any) -> Int[Array, "..."]:
    return jnp.asarray(np.asarray(x, dtype=np.int64).reshape(np.shape(x)))


def _f64(x: Any) -> Float[Array, "..."]:
    return jnp.asarray(np.asarray(x, dtype=float))


def _estimated_fields(parameters: _Parameters, inner: _Inner) -> dict[str, Any]:
    """`PetabProblem` fields of the estimated parameters: the free ones (optimised) and the
    inner ones (closed form)."""
    outer = [p for p in parameters.estimated if p not in inner.ids]
    keep = [parameters.estimated.index(p) for p in outer]
    inner_pos = [parameters.estimated.index(p) for p in inner.ids]
    return dict(
        theta_nominal=_f64(parameters.nominal),
        estimated_index=_i64([parameters.index[p] for p in outer]),
        lower=_f64([parameters.lower[i] for i in keep]),
        upper=_f64([parameters.upper[i] for i in keep]),
        scale_code=_i64([parameters.scale_code[i] for i in keep]),
        prior_code=_i64([parameters.prior_code[i] for i in keep]),
        prior_a=_f64([parameters.prior_a[i] for i in keep]),
        prior_b=_f64([parameters.prior_b[i] for i in keep]),
        inner_index=_i64([parameters.index[p] for p in inner.ids]),
        inner_lower=_f64([parameters.lower[i] for i in inner_pos]),
        inner_upper=_f64([parameters.upper[i] for i in inner_pos]),
        row_scale_group=_i64(inner.row_scale_group),
        row_sigma_group=_i64(inner.row_sigma_group),
        free=tuple(outer),
        transforms=tuple(parameters.transforms[i] for i in keep),
        estimated_ids=tuple(parameters.estimated),
        inner_ids=tuple(inner.ids),
        inner_kinds=tuple(inner.kinds),
        parameter_ids=tuple(parameters.ids),
    )


def _table_fields(
    conditions: _Conditions, observables: _Observables, measurements: _Measurements
) -> dict[str, Any]:
    """`PetabProblem` fields of the condition, observable and measurement tables."""
    row_observables = [observables.ids[o] for o in measurements.rows_obs]
    return dict(
        condition_const=_f64(conditions.const),
        condition_ref=_i64(conditions.ref),
        state_const=_f64(conditions.state_const),
        state_ref=_i64(conditions.state_ref),
        state_set=jnp.asarray(conditions.state_set),
        sim_condition=_i64([conditions.row[s] for _, s in measurements.simulations]),
        sim_preequilibration=_i64(
            [
                measurements.preequilibrations.index(p) if p else -1
                for p, _ in measurements.simulations
            ]
        ),
        preequilibration_conditions=_i64(
            [conditions.row[p] for p in measurements.preequilibrations]
        ),
        times=_f64(measurements.times),
        row_simulation=_i64(measurements.rows_sim),
        row_time=_i64(measurements.rows_time),
        row_observable=_i64(measurements.rows_obs),
        row_z_const=_f64(measurements.z_const),
        row_z_ref=_i64(measurements.z_ref),
        measurements=_f64(measurements.values),
        row_transform=_i64([observables.transform_of[o] for o in row_observables]),
        row_laplace=jnp.asarray([observables.laplace_of[o] for o in row_observables]),
    )


def import_problem(
    yaml_path: str | Path,
    *,
    options: SolverOptions | None = None,
    lint: bool = True,
    steady_state_rtol: float = 1e-8,
    steady_state_atol: float = 1e-16,
    hierarchical: bool = False,
    implicit_steady_state: bool = True,
) -> PetabProblem:
    """Import a PEtab v1 problem (its YAML file) as a `PetabProblem`.

    **Arguments:**
    - `options`: solver options (default Rodas4, rtol 1e-8, atol 1e-12 — near AMICI's
      defaults — forward-mode differentiable for Levenberg–Marquardt);
    - `lint`: run the reference PEtab linter first (errors become one `PetabError`);
    - `steady_state_rtol/atol`: pre-equilibration ends when every |dx_i/dt| is below
      atol + rtol·|x_i| (AMICI's defaults);
    - `hierarchical`: estimate scaling factors and noise parameters that occur only as such
      in closed form given each simulation (Loos et al., Bioinformatics 2018), so optimisers
      move only the others (`free`); `all_estimates` gives every estimated value;
    - `implicit_steady_state`: differentiate a pre-equilibrated steady state implicitly
      (∂f/∂x·dx* = −∂f/∂p·dp with the conservation laws, found at import) instead of through
      the integration to it (autonomous models; the steady state itself is the same).

    Unsupported SBML is refused by name (`UnsupportedSBMLError`)."""
    yaml_path = Path(yaml_path)
    problem, sbml_path = _load_tables(yaml_path)
    if lint:
        _lint(problem, yaml_path)
    ode = read_sbml(sbml_path)
    files = {"observable": "observable table", "measurement": "measurement table"}
    parameters = _read_parameters(problem.parameter_df)
    conditions = _read_conditions(problem.condition_df, ode, parameters.index)
    observables = _read_observables(ode, problem.observable_df, parameters.ids, files)
    measurements = _read_measurements(
        problem.measurement_df, observables, conditions.row, parameters.index
    )
    if hierarchical:
        inner = _hierarchical_parameters(ode, parameters, conditions, observables, measurements)
    else:
        inner = _Inner.none(len(measurements.values))
    return PetabProblem(
        model=_generated_model(ode, observables, implicit_steady_state),
        **_estimated_fields(parameters, inner),
        **_table_fields(conditions, observables, measurements),
        steady_state_rtol=_f64(steady_state_rtol),
        steady_state_atol=_f64(steady_state_atol),
        options=_default_options() if options is None else options,
        least_squares=parameters.least_squares and not any(observables.laplace_of.values()),
        name=yaml_path.stem,
    )


__all__ = ["PetabError", "UnsupportedSBMLError", "import_problem"]
