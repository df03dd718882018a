"""PEtab v1 YAML → `PetabProblem`: the tables read with the reference `petab` library, the SBML
model with libsbml/sbmlmath, the equations generated as JAX code once per model."""

from __future__ import annotations

import logging
import math
import numbers
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd
import sympy as sp

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


def _has_time_outside_conditions(expr: sp.Expr) -> bool:
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


def _observable_functions(ode: SymbolicODE, observable_df: pd.DataFrame, parameter_ids, files):
    """The observable and noise formulas as one generated function
    measure(time, x, p, theta, z) -> [h_1..h_n, σ_1..σ_n], and the placeholder names (z)."""
    import petab.v1 as petab
    from petab.v1.math import sympify_petab

    state = {s: sp.Symbol(s, real=True) for s in ode.states}
    model_parameter = {p: sp.Symbol(p, real=True) for p in ode.parameters}
    theta_symbols = [sp.Symbol(f"theta__{i}", real=True) for i in range(len(parameter_ids))]
    theta_of = dict(zip(parameter_ids, theta_symbols))
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
    z_symbols = [sp.Symbol(f"z__{i}", real=True) for i in range(len(placeholders))]
    z_of = dict(zip(placeholders, z_symbols))
    assignments = {sp.Symbol(k, real=True): v for k, v in ode.assignments.items()}
    exprs = []
    for obs_id, column, expr in formulas:
        replacements = {}
        for symbol in expr.free_symbols:
            name = symbol.name
            if name in state or name in model_parameter:
                continue
            if symbol in assignments:
                replacements[symbol] = assignments[symbol]
            elif name in z_of:
                replacements[symbol] = z_of[name]
            elif name in theta_of:
                replacements[symbol] = theta_of[name]
            elif name in ("t", "time"):
                replacements[symbol] = TIME
            else:
                raise PetabError(
                    f"{files['observable']}: observable {obs_id!r}, column {column}: unknown "
                    f"symbol {name!r} (not a species, model parameter, assignment, "
                    "parameter-table parameter or placeholder)"
                )
        exprs.append(expr.xreplace(replacements))
    arguments = [
        TIME,
        [state[s] for s in ode.states],
        [model_parameter[p] for p in ode.parameters],
        theta_symbols,
        z_symbols,
    ]
    return generate("measure", arguments, exprs), placeholders, exprs


def _hierarchical_parameters(
    *,
    ode,
    estimated,
    parameter_index,
    prior_code,
    condition_ref,
    state_ref,
    placeholders,
    formulas,
    observable_ids,
    transform_of,
    laplace_of,
    rows_obs,
    z_ref,
    z_const,
):
    """Estimated parameters with a closed-form optimum given the simulation: used only as the
    override of an observable placeholder the formula is proportional to (lin scale, normal
    noise, all its rows sharing one noise source), or only as a whole noise formula (normal
    noise); never in the model, the conditions, a formula directly, or with a prior."""
    n_obs = len(observable_ids)
    observable_exprs, noise_exprs = formulas[:n_obs], formulas[n_obs:]
    model_symbols = set()
    for expr in list(ode.rhs) + list(ode.initial) + list(ode.switch_times):
        model_symbols |= {s.name for s in expr.free_symbols}
    formula_thetas = set()
    for expr in formulas:
        formula_thetas |= {s.name for s in expr.free_symbols if s.name.startswith("theta__")}
    inner_ids, inner_kinds = [], []
    row_scale_group = -np.ones(len(rows_obs), dtype=int)
    row_sigma_group = -np.ones(len(rows_obs), dtype=int)
    for k, pid in enumerate(estimated):
        q = parameter_index[pid]
        if (
            PRIOR_TYPES[prior_code[k]] != "none"
            or pid in model_symbols
            or f"theta__{q}" in formula_thetas
            or any(
                np.any(condition_ref[:, j] == q)
                for j, name in enumerate(ode.parameters)
                if name != pid or name in model_symbols
            )
            or np.any(state_ref == q)
        ):
            continue
        rows, columns = np.nonzero(z_ref == q)
        if rows.size == 0:
            continue
        kinds = set()
        for i, j in zip(rows, columns):
            obs = observable_ids[rows_obs[i]]
            z = sp.Symbol(f"z__{j}", real=True)
            name = placeholders[j]
            if name.startswith("observableParameter"):
                expr = observable_exprs[rows_obs[i]]
                g = sp.diff(expr, z)
                proportional = z not in g.free_symbols and sp.simplify(expr - z * g) == 0
                ok = proportional and transform_of[obs] == 0 and not laplace_of[obs]
                kinds.add("scaling" if ok else "no")
            else:
                ok = noise_exprs[rows_obs[i]] == z and not laplace_of[obs]
                kinds.add("noise" if ok else "no")
        if len(kinds) != 1 or "no" in kinds:
            continue
        kind = kinds.pop()
        rows = np.unique(rows)
        if kind == "scaling":
            # all rows it scales must share one σ (then the optimum does not depend on σ)
            noise_sources = set()
            for i in rows:
                expr = noise_exprs[rows_obs[i]]
                zs = sorted(s.name for s in expr.free_symbols if s.name.startswith("z__"))
                if len(zs) != 1 or expr != sp.Symbol(zs[0], real=True):
                    noise_sources.add(("formula", str(expr)))
                    continue
                j = int(zs[0][3:])
                noise_sources.add(
                    ("ref", int(z_ref[i, j])) if z_ref[i, j] >= 0 else ("c", float(z_const[i, j]))
                )
            if len(noise_sources) != 1 or next(iter(noise_sources))[0] == "formula":
                continue
            row_scale_group[rows] = len(inner_ids)
        else:
            row_sigma_group[rows] = len(inner_ids)
        inner_ids.append(pid)
        inner_kinds.append(kind)
    return inner_ids, inner_kinds, row_scale_group, row_sigma_group


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
    import diffrax as dfx
    import petab.v1 as petab

    yaml_path = Path(yaml_path)
    problem, sbml_path = _load_tables(yaml_path)
    if lint:
        _lint(problem, yaml_path)
    ode = read_sbml(sbml_path)
    files = {"observable": "observable table", "measurement": "measurement table"}

    # --- parameters ------------------------------------------------------------------
    parameter_df = problem.parameter_df
    parameter_ids = list(parameter_df.index)
    parameter_index = {p: i for i, p in enumerate(parameter_ids)}
    theta_nominal = []
    for pid, row in parameter_df.iterrows():
        nominal = row.get("nominalValue", np.nan)
        if (pd.isna(nominal)) and not int(row.get("estimate", 1)):
            raise PetabError(f"parameter table, parameter {pid!r}: fixed but no nominalValue")
        theta_nominal.append(float(nominal) if not pd.isna(nominal) else np.nan)
    estimated = [p for p, row in parameter_df.iterrows() if int(row.get("estimate", 0)) == 1]
    scale_code, transforms, lower, upper = [], [], [], []
    prior_code, prior_a, prior_b = [], [], []
    for pid in estimated:
        row = parameter_df.loc[pid]
        scale = str(row.get("parameterScale", "lin"))
        if scale not in SCALES:
            raise PetabError(
                f"parameter table, {pid!r}: parameterScale {scale!r} not lin/log/log10"
            )
        lb, ub = float(row["lowerBound"]), float(row["upperBound"])
        if not (np.isfinite(lb) and np.isfinite(ub) and lb < ub):
            raise PetabError(
                f"parameter table, {pid!r}: bounds [{lb}, {ub}] must be finite with lower < upper"
            )
        if scale != "lin" and lb <= 0:
            raise PetabError(f"parameter table, {pid!r}: {scale} scale needs lowerBound > 0")
        scale_code.append(SCALES.index(scale))
        transforms.append("loglogit" if scale != "lin" else "logit")
        lower.append(lb)
        upper.append(ub)
        kind = row.get("objectivePriorType", np.nan)
        kind = "none" if pd.isna(kind) else str(kind)
        if kind not in PRIOR_TYPES:
            raise PetabError(f"parameter table, {pid!r}: objectivePriorType {kind!r} unknown")
        a, b = 0.0, 1.0
        if kind != "none":
            values = [float(v) for v in str(row["objectivePriorParameters"]).split(";")]
            a, b = values
        prior_code.append(PRIOR_TYPES.index(kind))
        prior_a.append(a)
        prior_b.append(b)
        if np.isnan(theta_nominal[parameter_index[pid]]):
            theta_nominal[parameter_index[pid]] = math.sqrt(lb * ub) if scale != "lin" else lb
    least_squares = not any(
        PRIOR_TYPES[c] in ("laplace", "logLaplace", "parameterScaleLaplace") for c in prior_code
    )

    # --- conditions --------------------------------------------------------------------
    condition_df = problem.condition_df
    condition_ids = list(condition_df.index)
    condition_row = {c: i for i, c in enumerate(condition_ids)}
    n_p, n_x = len(ode.parameters), len(ode.states)
    default_const = np.asarray(ode.parameter_values, dtype=float)
    default_ref = np.asarray([parameter_index.get(p, -1) for p in ode.parameters], dtype=int)
    condition_const = np.tile(default_const, (len(condition_ids), 1))
    condition_ref = np.tile(default_ref, (len(condition_ids), 1))
    state_const = np.zeros((len(condition_ids), n_x))
    state_ref = -np.ones((len(condition_ids), n_x), dtype=int)
    state_set = np.zeros((len(condition_ids), n_x), dtype=bool)
    for column in condition_df.columns:
        if column == "conditionName":
            continue
        for cid, value in condition_df[column].items():
            where = f"condition table, condition {cid!r}, column {column!r}"
            i = condition_row[cid]
            if column in ode.parameters:
                if pd.isna(value):
                    continue
                j = ode.parameters.index(column)
                condition_const[i, j], condition_ref[i, j] = _number_or_id(
                    value, parameter_index, where
                )
            elif column in ode.states:
                if pd.isna(value):
                    continue  # NaN: keep the pre-equilibrated / model initial value
                j = ode.states.index(column)
                state_const[i, j], state_ref[i, j] = _number_or_id(value, parameter_index, where)
                state_set[i, j] = True
            else:
                raise PetabError(
                    f"condition table: column {column!r} is not a parameter, compartment or "
                    "species of the SBML model (or it is set by a rule); remove it or fix its id"
                )
    unresolved = [
        ode.parameters[j]
        for j in range(n_p)
        if np.isnan(default_const[j])
        and default_ref[j] < 0
        and np.any(np.isnan(condition_const[:, j]) & (condition_ref[:, j] < 0))
    ]
    if unresolved:
        raise PetabError(
            f"SBML parameter {unresolved[0]!r} has no value and is not set by the parameter or "
            "condition table"
        )

    # --- measurements ----------------------------------------------------------------
    measure, placeholders, formulas = _observable_functions(
        ode, problem.observable_df, parameter_ids, files
    )
    observable_df = problem.observable_df
    observable_ids = list(observable_df.index)
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
    if any(laplace_of.values()):
        least_squares = False

    df = problem.measurement_df.reset_index(drop=True)
    if "preequilibrationConditionId" not in df.columns:
        df["preequilibrationConditionId"] = np.nan
    simulations: list[tuple[str, str]] = []
    preequilibrations: list[str] = []
    rows_sim, rows_time, rows_obs, z_const, z_ref, ys = [], [], [], [], [], []
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
    for k, row in df.iterrows():
        where = f"measurement table, row {k + 2}"
        obs_id = row["observableId"]
        if obs_id not in observable_ids:
            raise PetabError(
                f"{where}: unknown observableId {obs_id!r}; add it to the observable table"
            )
        pre = row["preequilibrationConditionId"]
        pre = "" if pd.isna(pre) else str(pre)
        sim = str(row["simulationConditionId"])
        for c in (pre, sim):
            if c and c not in condition_row:
                raise PetabError(f"{where}: condition {c!r} is not in the condition table")
        if pre and pre not in preequilibrations:
            preequilibrations.append(pre)
        if (pre, sim) not in simulations:
            simulations.append((pre, sim))
        value = float(row["measurement"])
        if not np.isfinite(value):
            raise PetabError(f"{where}: measurement {row['measurement']!r} is not a finite number")
        if transform_of[obs_id] and value <= 0:
            raise PetabError(
                f"{where}: measurement {value} of {obs_id!r} must be > 0 on its "
                f"{SCALES[transform_of[obs_id]]} scale"
            )
        rows_sim.append(simulations.index((pre, sim)))
        rows_time.append(times.index(float(row["time"])))
        rows_obs.append(observable_ids.index(obs_id))
        zc, zr = np.zeros(len(placeholders)), -np.ones(len(placeholders), dtype=int)
        for kind, column in (("observable", "observableParameters"), ("noise", "noiseParameters")):
            expected = petab.get_formula_placeholders(
                str(observable_df.loc[obs_id, f"{kind}Formula"]), obs_id, kind
            )
            given = (
                petab.split_parameter_replacement_list(row.get(column, np.nan))
                if column in df.columns
                else []
            )
            if len(given) != len(expected):
                raise PetabError(
                    f"{where}, column {column}: {len(given)} value(s) for the {len(expected)} "
                    f"placeholder(s) {expected} of {obs_id!r}"
                )
            for name, value_or_id in zip(expected, given):
                j = placeholders.index(name)
                zc[j], zr[j] = _number_or_id(
                    value_or_id, parameter_index, f"{where}, column {column}"
                )
        z_const.append(zc)
        z_ref.append(zr)
        ys.append(value)
    if not ys:
        raise PetabError("measurement table: no measurements")

    # --- hierarchical (closed-form) scaling and noise parameters ----------------------------
    inner_ids, inner_kinds = [], []
    row_scale_group = -np.ones(len(ys), dtype=int)
    row_sigma_group = -np.ones(len(ys), dtype=int)
    if hierarchical:
        inner_ids, inner_kinds, row_scale_group, row_sigma_group = _hierarchical_parameters(
            ode=ode,
            estimated=estimated,
            parameter_index=parameter_index,
            prior_code=prior_code,
            condition_ref=condition_ref,
            state_ref=state_ref,
            placeholders=placeholders,
            formulas=formulas,
            observable_ids=observable_ids,
            transform_of=transform_of,
            laplace_of=laplace_of,
            rows_obs=rows_obs,
            z_ref=np.reshape(z_ref, (len(ys), len(placeholders))),
            z_const=np.reshape(z_const, (len(ys), len(placeholders))),
        )
    outer = [p for p in estimated if p not in inner_ids]
    keep = [estimated.index(p) for p in outer]
    inner_pos = [estimated.index(p) for p in inner_ids]

    # --- generated model ---------------------------------------------------------------
    x_symbols, p_symbols = ode.state_symbols, ode.parameter_symbols
    rhs = generate("rhs", [TIME, x_symbols, p_symbols], ode.rhs)
    initial = generate("initial", [p_symbols], ode.initial)
    switch = generate("switch_times", [p_symbols], ode.switch_times) if ode.switch_times else None
    time_dependent = any(_has_time_outside_conditions(e) for e in ode.rhs)
    model = PetabModel(
        rhs=rhs,
        initial=initial,
        switch_times=switch,
        measure=measure,
        n_observables=len(observable_ids),
        time_dependent=time_dependent,
        state_ids=tuple(ode.states),
        parameter_ids=tuple(ode.parameters),
        observable_ids=tuple(observable_ids),
        conservation=None
        if time_dependent or not implicit_steady_state
        else conservation_laws(rhs, len(ode.states), len(ode.parameters)),
    )
    if options is None:
        options = SolverOptions(
            rtol=1e-8,
            atol=1e-12,
            pcoeff=0.0,
            icoeff=1.0,
            max_steps=10_000,
            adjoint=dfx.ForwardMode(),
        )
    i64 = lambda x: jnp.asarray(np.asarray(x, dtype=np.int64).reshape(np.shape(x)))  # noqa: E731
    f64 = lambda x: jnp.asarray(np.asarray(x, dtype=float))  # noqa: E731
    n_rows = len(ys)
    out = PetabProblem(
        model=model,
        theta_nominal=f64(theta_nominal),
        estimated_index=i64([parameter_index[p] for p in outer]),
        lower=f64([lower[i] for i in keep]),
        upper=f64([upper[i] for i in keep]),
        scale_code=i64([scale_code[i] for i in keep]),
        prior_code=i64([prior_code[i] for i in keep]),
        prior_a=f64([prior_a[i] for i in keep]),
        prior_b=f64([prior_b[i] for i in keep]),
        inner_index=i64([parameter_index[p] for p in inner_ids]),
        inner_lower=f64([lower[i] for i in inner_pos]),
        inner_upper=f64([upper[i] for i in inner_pos]),
        row_scale_group=i64(row_scale_group),
        row_sigma_group=i64(row_sigma_group),
        condition_const=f64(condition_const),
        condition_ref=i64(condition_ref),
        state_const=f64(state_const),
        state_ref=i64(state_ref),
        state_set=jnp.asarray(state_set),
        sim_condition=i64([condition_row[s] for _, s in simulations]),
        sim_preequilibration=i64([preequilibrations.index(p) if p else -1 for p, _ in simulations]),
        preequilibration_conditions=i64([condition_row[p] for p in preequilibrations]),
        times=f64(times),
        row_simulation=i64(rows_sim),
        row_time=i64(rows_time),
        row_observable=i64(rows_obs),
        row_z_const=f64(np.reshape(z_const, (n_rows, len(placeholders)))),
        row_z_ref=i64(np.reshape(z_ref, (n_rows, len(placeholders)))),
        measurements=f64(ys),
        row_transform=i64([transform_of[observable_ids[o]] for o in rows_obs]),
        row_laplace=jnp.asarray([laplace_of[observable_ids[o]] for o in rows_obs]),
        steady_state_rtol=f64(steady_state_rtol),
        steady_state_atol=f64(steady_state_atol),
        options=options,
        free=tuple(outer),
        transforms=tuple(transforms[i] for i in keep),
        estimated_ids=tuple(estimated),
        inner_ids=tuple(inner_ids),
        inner_kinds=tuple(inner_kinds),
        parameter_ids=tuple(parameter_ids),
        least_squares=least_squares,
        name=yaml_path.stem,
    )
    return out


__all__ = ["PetabError", "UnsupportedSBMLError", "import_problem"]
