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
        roots = sp.solve(sp.Eq(difference, 0), TIME, dict=False)
        if len(roots) != 1:
            _refuse(*where, f"its piecewise condition {rel} has no unique switch time")
        out.append(sp.simplify(roots[0]))
    return out


def read_sbml(path: str | Path) -> SymbolicODE:
    """Read an SBML file into a `SymbolicODE`, refusing unsupported elements by name."""
    path = Path(path)
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

    symbol = lambda name: sp.Symbol(name, real=True)  # noqa: E731
    rate_rules = {r.getVariable(): r for r in model.getListOfRules() if r.isRate()}
    assignment_rules = {r.getVariable(): r for r in model.getListOfRules() if r.isAssignment()}

    # constant quantities: compartments and parameters without rules
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

    species_compartment, in_concentration = {}, {}
    states, initial_values = [], {}
    for s in model.getListOfSpecies():
        sid = s.getId()
        species_compartment[sid] = s.getCompartment()
        in_concentration[sid] = not s.getHasOnlySubstanceUnits()
        if sid in assignment_rules:
            continue
        states.append(sid)
        size = symbol(s.getCompartment())
        if s.isSetInitialConcentration():
            value = sp.Float(s.getInitialConcentration())
            initial_values[sid] = value if in_concentration[sid] else value * size
        elif s.isSetInitialAmount():
            value = sp.Float(s.getInitialAmount())
            initial_values[sid] = value / size if in_concentration[sid] else value
        else:
            initial_values[sid] = sp.nan
    for p in model.getListOfParameters():
        if p.getId() in rate_rules:
            states.append(p.getId())
            initial_values[p.getId()] = sp.Float(p.getValue()) if p.isSetValue() else sp.nan
    for variable in rate_rules:
        if variable not in states:
            element = "speciesReference" if model.getSpeciesReference(variable) else "rateRule"
            _refuse(element, variable, "a rate rule on something that is not a species/parameter")

    # assignment rules, substituted in dependency order (reaction fluxes too, for observables)
    assignments: dict[str, sp.Expr] = {
        v: _math(r, ("assignmentRule", v)) for v, r in assignment_rules.items()
    }
    for variable in assignments:
        if model.getSpeciesReference(variable) is not None:
            _refuse("speciesReference", variable, "variable stoichiometry")

    def substituted(expr: sp.Expr) -> sp.Expr:
        for _ in range(len(assignments) + 1):
            targets = {symbol(v): e for v, e in assignments.items()}
            new = expr.xreplace(targets)
            if new == expr:
                return expr
            expr = new
        raise UnsupportedSBMLError("SBML assignment rules form a cycle")

    assignments = {v: substituted(e) for v, e in assignments.items()}

    # reactions: dx/dt contributions
    rhs = {s: sp.Integer(0) for s in states}
    for reaction in model.getListOfReactions():
        rid = reaction.getId()
        law = reaction.getKineticLaw()
        if law is None or not law.isSetMath():
            _refuse("reaction", rid, "a reaction without a kinetic law")
        flux = _math(law, ("kineticLaw", rid))
        local = {}
        for lp in list(law.getListOfParameters()) + list(law.getListOfLocalParameters()):
            local[symbol(lp.getId())] = sp.Float(lp.getValue())
        flux = substituted(flux.xreplace(local))
        assignments[rid] = flux
        for sign, refs in ((-1, reaction.getListOfReactants()), (1, reaction.getListOfProducts())):
            for ref in refs:
                if ref.isSetStoichiometryMath() or (
                    ref.isSetId() and model.getInitialAssignment(ref.getId()) is not None
                ):
                    _refuse(
                        "speciesReference",
                        ref.getId() or ref.getSpecies(),
                        "variable stoichiometry",
                    )
                sid = ref.getSpecies()
                species = model.getSpecies(sid)
                if species.getBoundaryCondition() or species.getConstant() or sid in rate_rules:
                    continue
                if sid in assignment_rules:
                    _refuse("species", sid, "changed by a reaction and by an assignment rule")
                stoichiometry = ref.getStoichiometry() if ref.isSetStoichiometry() else 1.0
                coefficient = (
                    sp.Integer(int(stoichiometry))
                    if float(stoichiometry).is_integer()
                    else sp.Float(stoichiometry)
                )
                term = sign * coefficient * flux
                if in_concentration[sid]:
                    term = term / symbol(species_compartment[sid])
                rhs[sid] = rhs[sid] + term
    for variable, rule in rate_rules.items():
        rhs[variable] = substituted(_math(rule, ("rateRule", variable)))

    # initial values: initial assignments override the declared values
    for ia in model.getListOfInitialAssignments():
        target = ia.getSymbol()
        expr = _math(ia, ("initialAssignment", target))
        if target in initial_values:
            initial_values[target] = expr
        elif target in parameters:
            # a parameter's value set by an expression: substitute it wherever it appears
            assignments[target] = substituted(expr)
        else:
            _refuse("initialAssignment", target, "its target is not a species or parameter")
    # parameters given by initial assignments behave as constants equal to their expression
    initial_targets = {
        ia.getSymbol() for ia in model.getListOfInitialAssignments() if ia.getSymbol() in parameters
    }
    constant_exprs = {symbol(v): assignments[v] for v in initial_targets}
    for _ in range(len(constant_exprs) + 1):
        constant_exprs = {k: e.xreplace(constant_exprs) for k, e in constant_exprs.items()}

    state_symbols = {symbol(s) for s in states}

    def finish(expr: sp.Expr) -> sp.Expr:
        return substituted(sp.sympify(expr)).xreplace(constant_exprs)

    rhs_list = [finish(rhs[s]) for s in states]
    assignments = {k: finish(e) for k, e in assignments.items()}
    # initial values may refer to other species' initial values (t = 0)
    initial = {s: finish(initial_values[s]).xreplace({TIME: 0}) for s in states}
    for _ in range(len(states) + 1):
        initial = {
            s: e.xreplace({symbol(k): v for k, v in initial.items()}) for s, e in initial.items()
        }
    bad = [s for s, e in initial.items() if e.free_symbols & state_symbols]
    if bad:
        _refuse("initialAssignment", bad[0], "initial values depend on each other in a cycle")
    nan_initial = [s for s, e in initial.items() if e == sp.nan]
    if nan_initial:
        _refuse("species", nan_initial[0], "no initial value (initialConcentration/Amount)")

    switch_times: list[sp.Expr] = []
    for sid, expr in zip(states, rhs_list):
        for root in _switch_times(expr, state_symbols, ("rule or kineticLaw of", sid)):
            if root not in switch_times:
                switch_times.append(root)
    known = state_symbols | {symbol(p) for p in parameters} | {TIME}
    for sid, expr in list(zip(states, rhs_list)) + [(s, initial[s]) for s in states]:
        unknown = expr.free_symbols - known
        if unknown:
            name = sorted(str(u) for u in unknown)[0]
            _refuse("symbol", name, f"used in the equations of {sid!r} but not defined")
    return SymbolicODE(
        name=model.getId() or path.stem,
        states=states,
        parameters=parameters,
        parameter_values=[float(v) for v in values],
        rhs=rhs_list,
        initial=[initial[s] for s in states],
        assignments=assignments,
        switch_times=switch_times,
        species_compartment=species_compartment,
        species_in_concentration=in_concentration,
    )
