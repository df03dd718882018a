"""SBML → a symbolic ODE system (sympy), read with libsbml and sbmlmath.

What is supported (the SBML that PEtab benchmark problems use):

- reactions with kinetic laws (local parameters become constants), constant stoichiometry;
- compartments with constant sizes (sizes are parameters, so a condition may set them);
- species in concentration (`hasOnlySubstanceUnits=false`: d[S]/dt = Σ ν·v / V) or in amount
  (`hasOnlySubstanceUnits=true`: dn/dt = Σ ν·v); boundary and constant species;
- rate rules (species and parameters), assignment rules (substituted symbolically,
  in dependency order), initial assignments;
- function definitions (expanded by libsbml's converter);
- piecewise functions of time: each condition `time <op> expression` becomes a *switch point*
  (an expression of the parameters) that the solver steps onto exactly.

Anything else — events, algebraic rules, rate rules on compartments, variable stoichiometry,
delays, `rateOf`, fast reactions, piecewise conditions on states — is refused by name, with
the SBML element and its id: a problem is never solved with part of its model ignored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import libsbml
import sympy as sp

#: The model's time variable in every expression built here.
TIME = sp.Symbol("time", real=True)


class UnsupportedSBMLError(ValueError):
    """An SBML element that mgjax cannot simulate faithfully (named with its id)."""


@dataclasses.dataclass
class SymbolicODE:
    """The ODE system dx/dt = rhs(time, x, p) of an SBML model.

    - `states`: ids of the state variables (species, then parameters with rate rules);
    - `parameters`: ids of the constant quantities (SBML parameters, compartment sizes),
      with their SBML values in `parameter_values`;
    - `rhs`, `initial`: expressions in `time`, the state and parameter symbols;
    - `assignments`: id → expression (states, parameters, time) of every assignment-rule
      variable and reaction rate (reaction ids evaluate to their flux), for observables;
    - `switch_times`: expressions of the parameters at which the right-hand side jumps;
    - `species_compartment`, `species_in_concentration`: what each species symbol means.
    """

    name: str
    states: list[str]
    parameters: list[str]
    parameter_values: list[float]
    rhs: list[sp.Expr]
    initial: list[sp.Expr]
    assignments: dict[str, sp.Expr]
    switch_times: list[sp.Expr]
    species_compartment: dict[str, str]
    species_in_concentration: dict[str, bool]

    def symbol(self, name: str) -> sp.Symbol:
        return sp.Symbol(name, real=True)

    @property
    def state_symbols(self) -> list[sp.Symbol]:
        return [self.symbol(s) for s in self.states]

    @property
    def parameter_symbols(self) -> list[sp.Symbol]:
        return [self.symbol(p) for p in self.parameters]


def _refuse(element: str, sid: str, why: str = "") -> None:
    detail = f": {why}" if why else ""
    raise UnsupportedSBMLError(
        f"SBML {element} {sid!r} is not supported{detail}. mgjax simulates reactions, rate, "
        "assignment and initial-assignment rules, compartments, species (amount or "
        "concentration) and piecewise inputs of time; it refuses a model rather than ignore "
        "part of it."
    )


def _math(obj, where: tuple[str, str]) -> sp.Expr:
    """An SBML math element as a sympy expression in our symbols (real-valued)."""
    import sbmlmath

    try:
        expr = sbmlmath.sbml_math_to_sympy(obj)
    except Exception as error:  # noqa: BLE001 - the converter's errors vary by construct
        _refuse(*where, f"its math could not be read ({error})")
    if expr is None:
        _refuse(*where, "it has no math")
    replacements = {}
    for atom in expr.atoms(sp.Symbol, sp.Function):
        if isinstance(atom, sbmlmath.TimeSymbol):
            replacements[atom] = TIME
        elif isinstance(atom, sbmlmath.CSymbol) and atom.name.lower().startswith("avogadro"):
            replacements[atom] = sp.Float(6.02214076e23)
        elif isinstance(atom, sbmlmath.Delay | sbmlmath.RateOf):
            _refuse(*where, f"it uses {type(atom).__name__}")
        elif isinstance(atom, sp.Symbol) and not atom.is_real:
            replacements[atom] = sp.Symbol(atom.name, real=True)
    for atom in expr.atoms(sp.Function):
        if isinstance(atom, sbmlmath.Delay | sbmlmath.RateOf):
            _refuse(*where, f"it uses {type(atom).__name__}")
        if isinstance(atom, sp.core.function.AppliedUndef):
            _refuse(*where, f"it uses the function {atom.func.__name__}()")
    return expr.xreplace(replacements)


def _expand_function_definitions(document: libsbml.SBMLDocument) -> None:
    props = libsbml.ConversionProperties()
    props.addOption("expandFunctionDefinitions", True)
    if document.convert(props) != libsbml.LIBSBML_OPERATION_SUCCESS:
        _refuse("functionDefinition", "(all)", "libsbml could not expand them")


def _switch_times(expr: sp.Expr, states: set[sp.Symbol], where: tuple[str, str]) -> list[sp.Expr]:
    """Times at which a piecewise condition of `expr` changes value."""
    out = []
    for rel in expr.atoms(sp.core.relational.Relational):
        difference = rel.lhs - rel.rhs
        if TIME not in difference.free_symbols:
            if difference.free_symbols & states:
                _refuse(*where, f"its piecewise condition {rel} depends on a state (an event)")
            continue
        if difference.free_symbols & states:
            _refuse(*where, f"its piecewise condition {rel} depends on a state (an event)")
        slope = difference.diff(TIME)
        if slope.is_number and slope != 0 and TIME not in (difference - slope * TIME).free_symbols:
            # time ≥ c (a dosing schedule's hundreds of conditions): no need to solve
            out.append(sp.simplify(-(difference - slope * TIME) / slope))
            continue
        roots = sp.solve(sp.Eq(difference, 0), TIME, dict=False)
        if len(roots) != 1:
            _refuse(*where, f"its piecewise condition {rel} has no unique switch time")
        out.append(sp.simplify(roots[0]))
    return out


def _symbol(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


def _read_document(path: Path):
    """The SBML document and its model (function definitions expanded), or a ValueError."""
    document = libsbml.readSBMLFromFile(str(path))
    errors = [
        document.getError(i)
        for i in range(document.getNumErrors())
        if document.getError(i).getSeverity() >= libsbml.LIBSBML_SEV_ERROR
    ]
    if errors:
        raise ValueError(f"{path}: invalid SBML: {errors[0].getMessage().strip()}")
    model = document.getModel()
    if model is None:
        raise ValueError(f"{path}: no <model> element")
    if model.getNumFunctionDefinitions():
        _expand_function_definitions(document)
        model = document.getModel()
    return document, model


def _refuse_unsupported_elements(document, model) -> None:
    """Events, constraints, algebraic rules, fast reactions and required L3 packages."""
    for event in model.getListOfEvents():
        _refuse("event", event.getId() or "(unnamed)")
    for constraint in model.getListOfConstraints():
        _refuse("constraint", constraint.getMetaId() or "(unnamed)")
    for i, rule in enumerate(model.getListOfRules()):
        if rule.isAlgebraic():
            _refuse("algebraicRule", rule.getMetaId() or f"#{i}")
    for reaction in model.getListOfReactions():
        if reaction.isSetFast() and reaction.getFast():
            _refuse("reaction", reaction.getId(), "fast reactions")
    if document.getLevel() >= 3:
        namespaces = document.getNamespaces()
        for i in range(namespaces.getNumNamespaces()):
            package = namespaces.getPrefix(i)
            if package and document.getPackageRequired(package):
                _refuse("package", package, "SBML Level 3 packages that change the math")


def _constants(model, rate_rules, assignment_rules) -> tuple[list[str], list[float]]:
    """Constant quantities: compartments and parameters without rules, with their values."""
    parameters, values = [], []
    for c in model.getListOfCompartments():
        if c.getId() in rate_rules or c.getId() in assignment_rules:
            _refuse("compartment", c.getId(), "a compartment whose size changes (a rule on it)")
        parameters.append(c.getId())
        values.append(c.getSize() if c.isSetSize() else 1.0)
    for p in model.getListOfParameters():
        if p.getId() in rate_rules or p.getId() in assignment_rules:
            continue
        parameters.append(p.getId())
        values.append(p.getValue() if p.isSetValue() else float("nan"))
    return parameters, values


@dataclasses.dataclass
class _States:
    """The state variables (species without assignment rules, then parameters with rate
    rules), their declared initial values, and what each species symbol means."""

    ids: list[str] = dataclasses.field(default_factory=list)
    initial_values: dict[str, sp.Expr] = dataclasses.field(default_factory=dict)
    species_compartment: dict[str, str] = dataclasses.field(default_factory=dict)
    in_concentration: dict[str, bool] = dataclasses.field(default_factory=dict)


def _states(model, rate_rules, assignment_rules) -> _States:
    states = _States()
    for s in model.getListOfSpecies():
        sid = s.getId()
        states.species_compartment[sid] = s.getCompartment()
        states.in_concentration[sid] = not s.getHasOnlySubstanceUnits()
        if sid in assignment_rules:
            continue
        states.ids.append(sid)
        states.initial_values[sid] = _declared_initial_value(s, states.in_concentration[sid])
    for p in model.getListOfParameters():
        if p.getId() in rate_rules:
            states.ids.append(p.getId())
            states.initial_values[p.getId()] = sp.Float(p.getValue()) if p.isSetValue() else sp.nan
    for variable in rate_rules:
        if variable not in states.ids:
            element = "speciesReference" if model.getSpeciesReference(variable) else "rateRule"
            _refuse(element, variable, "a rate rule on something that is not a species/parameter")
    return states


def _declared_initial_value(species, in_concentration: bool) -> sp.Expr:
    """A species' initial concentration or amount, in the unit of its symbol (NaN: none)."""
    size = _symbol(species.getCompartment())
    if species.isSetInitialConcentration():
        value = sp.Float(species.getInitialConcentration())
        return value if in_concentration else value * size
    if species.isSetInitialAmount():
        value = sp.Float(species.getInitialAmount())
        return value / size if in_concentration else value
    return sp.nan


class _Assignments:
    """Assignment-rule variables, reaction fluxes and parameters set by initial assignments
    (`exprs`: id → expression), substituted into expressions in dependency order."""

    def __init__(self, model, assignment_rules):
        self.exprs: dict[str, sp.Expr] = {
            v: _math(r, ("assignmentRule", v)) for v, r in assignment_rules.items()
        }
        for variable in self.exprs:
            if model.getSpeciesReference(variable) is not None:
                _refuse("speciesReference", variable, "variable stoichiometry")
        self.exprs = {v: self.substituted(e) for v, e in self.exprs.items()}

    def substituted(self, expr: sp.Expr) -> sp.Expr:
        for _ in range(len(self.exprs) + 1):
            targets = {_symbol(v): e for v, e in self.exprs.items()}
            new = expr.xreplace(targets)
            if new == expr:
                return expr
            expr = new
        raise UnsupportedSBMLError("SBML assignment rules form a cycle")


def _reaction_rates(model, states: _States, rate_rules, assignment_rules, assignments):
    """dx/dt of every state: the reactions' contributions, or the state's rate rule. Each
    reaction's flux is recorded as an assignment under the reaction's id."""
    rhs = {s: sp.Integer(0) for s in states.ids}
    for reaction in model.getListOfReactions():
        flux = _reaction_flux(reaction, assignments)
        assignments.exprs[reaction.getId()] = flux
        for sign, refs in ((-1, reaction.getListOfReactants()), (1, reaction.getListOfProducts())):
            for ref in refs:
                sid = ref.getSpecies()
                term = _reaction_term(model, ref, sign, flux, states, rate_rules, assignment_rules)
                if term is not None:
                    rhs[sid] = rhs[sid] + term
    for variable, rule in rate_rules.items():
        rhs[variable] = assignments.substituted(_math(rule, ("rateRule", variable)))
    return rhs


def _reaction_flux(reaction, assignments: _Assignments) -> sp.Expr:
    """A reaction's kinetic law, its local parameters replaced by their values."""
    rid = reaction.getId()
    law = reaction.getKineticLaw()
    if law is None or not law.isSetMath():
        _refuse("reaction", rid, "a reaction without a kinetic law")
    flux = _math(law, ("kineticLaw", rid))
    local = {}
    for lp in list(law.getListOfParameters()) + list(law.getListOfLocalParameters()):
        local[_symbol(lp.getId())] = sp.Float(lp.getValue())
    return assignments.substituted(flux.xreplace(local))


def _reaction_term(model, ref, sign, flux, states: _States, rate_rules, assignment_rules):
    """One reactant's (sign −1) or product's (+1) share of a reaction's flux in its species'
    dx/dt (None: the species is not changed by reactions)."""
    if ref.isSetStoichiometryMath() or (
        ref.isSetId() and model.getInitialAssignment(ref.getId()) is not None
    ):
        _refuse("speciesReference", ref.getId() or ref.getSpecies(), "variable stoichiometry")
    sid = ref.getSpecies()
    species = model.getSpecies(sid)
    if species.getBoundaryCondition() or species.getConstant() or sid in rate_rules:
        return None
    if sid in assignment_rules:
        _refuse("species", sid, "changed by a reaction and by an assignment rule")
    stoichiometry = ref.getStoichiometry() if ref.isSetStoichiometry() else 1.0
    coefficient = (
        sp.Integer(int(stoichiometry))
        if float(stoichiometry).is_integer()
        else sp.Float(stoichiometry)
    )
    term = sign * coefficient * flux
    if states.in_concentration[sid]:
        term = term / _symbol(states.species_compartment[sid])
    return term


def _initial_assignments(model, states: _States, parameters, assignments) -> dict:
    """Apply the initial assignments: a state's replaces its declared initial value; a
    parameter's makes it a constant equal to its expression. Returns those constants,
    symbol → expression of the other constants resolved."""
    for ia in model.getListOfInitialAssignments():
        target = ia.getSymbol()
        expr = _math(ia, ("initialAssignment", target))
        if target in states.initial_values:
            states.initial_values[target] = expr
        elif target in parameters:
            # a parameter's value set by an expression: substitute it wherever it appears
            assignments.exprs[target] = assignments.substituted(expr)
        else:
            _refuse("initialAssignment", target, "its target is not a species or parameter")
    initial_targets = {
        ia.getSymbol() for ia in model.getListOfInitialAssignments() if ia.getSymbol() in parameters
    }
    constant_exprs = {_symbol(v): assignments.exprs[v] for v in initial_targets}
    for _ in range(len(constant_exprs) + 1):
        constant_exprs = {k: e.xreplace(constant_exprs) for k, e in constant_exprs.items()}
    return constant_exprs


def _initial_state(states: _States, finish) -> dict[str, sp.Expr]:
    """Initial values at t = 0, each in the parameters only (they may refer to other
    species' initial values)."""
    state_symbols = {_symbol(s) for s in states.ids}
    initial = {s: finish(states.initial_values[s]).xreplace({TIME: 0}) for s in states.ids}
    for _ in range(len(states.ids) + 1):
        initial = {
            s: e.xreplace({_symbol(k): v for k, v in initial.items()}) for s, e in initial.items()
        }
    bad = [s for s, e in initial.items() if e.free_symbols & state_symbols]
    if bad:
        _refuse("initialAssignment", bad[0], "initial values depend on each other in a cycle")
    nan_initial = [s for s, e in initial.items() if e == sp.nan]
    if nan_initial:
        _refuse("species", nan_initial[0], "no initial value (initialConcentration/Amount)")
    return initial


def _all_switch_times(states: list[str], rhs_list: list[sp.Expr]) -> list[sp.Expr]:
    state_symbols = {_symbol(s) for s in states}
    switch_times: list[sp.Expr] = []
    for sid, expr in zip(states, rhs_list):
        for root in _switch_times(expr, state_symbols, ("rule or kineticLaw of", sid)):
            if root not in switch_times:
                switch_times.append(root)
    return switch_times


def _refuse_undefined_symbols(states: list[str], parameters, rhs_list, initial) -> None:
    known = {_symbol(s) for s in states} | {_symbol(p) for p in parameters} | {TIME}
    for sid, expr in list(zip(states, rhs_list)) + [(s, initial[s]) for s in states]:
        unknown = expr.free_symbols - known
        if unknown:
            name = sorted(str(u) for u in unknown)[0]
            _refuse("symbol", name, f"used in the equations of {sid!r} but not defined")


def read_sbml(path: str | Path) -> SymbolicODE:
    """Read an SBML file into a `SymbolicODE`, refusing unsupported elements by name."""
    path = Path(path)
    document, model = _read_document(path)
    _refuse_unsupported_elements(document, model)
    rate_rules = {r.getVariable(): r for r in model.getListOfRules() if r.isRate()}
    assignment_rules = {r.getVariable(): r for r in model.getListOfRules() if r.isAssignment()}
    parameters, values = _constants(model, rate_rules, assignment_rules)
    states = _states(model, rate_rules, assignment_rules)
    assignments = _Assignments(model, assignment_rules)
    rhs = _reaction_rates(model, states, rate_rules, assignment_rules, assignments)
    constant_exprs = _initial_assignments(model, states, parameters, assignments)

    def finish(expr: sp.Expr) -> sp.Expr:
        return assignments.substituted(sp.sympify(expr)).xreplace(constant_exprs)

    rhs_list = [finish(rhs[s]) for s in states.ids]
    assignments.exprs = {k: finish(e) for k, e in assignments.exprs.items()}
    initial = _initial_state(states, finish)  # substitutes the finished assignments
    switch_times = _all_switch_times(states.ids, rhs_list)
    _refuse_undefined_symbols(states.ids, parameters, rhs_list, initial)
    return SymbolicODE(
        name=model.getId() or path.stem,
        states=states.ids,
        parameters=parameters,
        parameter_values=[float(v) for v in values],
        rhs=rhs_list,
        initial=[initial[s] for s in states.ids],
        assignments=assignments.exprs,
        switch_times=switch_times,
        species_compartment=states.species_compartment,
        species_in_concentration=states.in_concentration,
    )
