"""Population fits: the FOCE-I estimate of θ (typical values, covariate effects, Ω), its
covariance step, and the per-subject results (EBEs, predictions, CWRES, shrinkage)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pandas as pd
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Bool, Float, Int

from ..batch._run import errors_as_nan
from ..fit._laplace import Z95
from ..fit._problem import AbstractFitProblem
from ..runtime._programs import compile_program, cpu_compiler_options
from ._laplace import (
    INNER_MAX_STEPS,
    expected_information,
    fit_subjects,
    population_objective,
    subject_objective,
    subject_value_and_score,
    value_gradient_curvature,
)
from ._model import PopulationModel
from ._saem import (
    SaemSettings,
    chains_at,
    importance_sampling_ofv,
    saem_output,
    saem_schedule,
    saem_segment,
    saem_start,
    stochastic_information,
)

#: starting SD of every random effect (log scale: ~30 % CV)
OMEGA_START = 0.3
#: estimation methods of `fit_population`
METHODS = ("foce-i", "saem")
#: covariance steps: R⁻¹ (Hessian of the FOCE-I OFV), R⁻¹SR⁻¹, the expected information of the
#: FOCE-I linearisation, Louis' information by MCMC
COVARIANCE_METHODS = ("hessian", "sandwich", "expected", "stochastic", "none")
#: draws per subject of the importance-sampling OFV
IMPORTANCE_SAMPLES = 1000
#: multistart: SD of the perturbation of each start's log-scale typical values and log ω
START_SPREAD = 0.5
#: the outer fit (Optimistix BFGS on θ) stops at these relative/absolute tolerances
OUTER_RTOL = 1e-8
OUTER_ATOL = 1e-6
OUTER_MAX_STEPS = 500
#: the mesh axis the subjects are split along (several devices)
SUBJECT_AXIS = "subjects"


def stack_problems(problems: Sequence[AbstractFitProblem]) -> AbstractFitProblem:
    """One problem pytree with a leading subject axis (all must share structure and shapes:
    pad their observations and doses to the cohort's largest)."""
    first = jax.tree.structure(problems[0])
    shapes = [np.shape(x) for x in jax.tree.leaves(problems[0])]
    columns = []
    for k, p in enumerate(problems):
        leaves, structure = jax.tree.flatten(p)
        if structure != first or [np.shape(x) for x in leaves] != shapes:
            raise ValueError(
                f"subject {k}'s problem differs in structure or shapes from subject 0's; "
                "build all with the same free quantities and the cohort's padded sizes"
            )
        columns.append(leaves)
    # stacked on the host, one transfer per leaf
    stacked = [jnp.asarray(np.stack([np.asarray(x) for x in leaf])) for leaf in zip(*columns)]
    return jax.tree.unflatten(first, stacked)


def _take(stacked: AbstractFitProblem, index: Any) -> AbstractFitProblem:
    return jax.tree.map(lambda x: x[index], stacked)


@dataclasses.dataclass(frozen=True)
class PopulationResult:
    """A population fit. `theta` is the estimated vector (`model.theta_names`); tables:
    `population_parameters`, `random_effects`, `omega`, `individual_parameters`,
    `predictions` (`tables()` returns them by their run-directory file names)."""

    model: PopulationModel
    method: str  # foce-i | saem
    subjects: tuple[str, ...]
    excluded: tuple[str, ...]
    theta: np.ndarray
    ofv: float  # FOCE-I's −2 log L at θ (for SAEM: Monolix's "by linearisation")
    ofv_importance_sampling: float  # −2 log L by importance sampling (NaN: not computed)
    n_observations: int
    covariance: np.ndarray  # of θ: R⁻¹ (inverse Hessian of −log L) or the sandwich
    covariance_method: str
    converged: bool
    iterations: int
    inner_converged: np.ndarray
    seconds_compile: float
    seconds_total: float
    population_parameters: pd.DataFrame
    random_effects: pd.DataFrame
    omega: pd.DataFrame
    individual_parameters: pd.DataFrame
    predictions: pd.DataFrame | None
    eta: np.ndarray  # [n, r] empirical Bayes estimates of η
    trace: np.ndarray | None = None  # SAEM: θ at every iteration [k, q]
    start_ofvs: tuple[float, ...] = ()  # FOCE-I: the OFV reached from each start

    @property
    def aic(self) -> float:
        return self.ofv + 2.0 * len(self.theta)

    @property
    def bic(self) -> float:
        return self.ofv + len(self.theta) * float(np.log(self.n_observations))

    @property
    def undetermined(self) -> tuple[str, ...]:
        """Entries of θ the covariance step could not determine (R singular along them)."""
        if self.covariance_method == "none":
            return ()
        var = np.diag(self.covariance)
        return tuple(n for n, v in zip(self.model.theta_names, var) if not np.isfinite(v))

    def summary(self) -> dict[str, Any]:
        """The run's `summary.json` (a quantity not computed, e.g. the importance-sampling OFV
        of a FOCE-I fit, is None)."""
        out = dict(
            method=self.method,
            ofv=self.ofv,
            ofv_importance_sampling=self.ofv_importance_sampling,
            aic=self.aic,
            bic=self.bic,
            converged=self.converged,
            iterations=self.iterations,
            subjects=len(self.subjects),
            excluded=list(self.excluded),
            observations=self.n_observations,
            inner_converged=int(np.sum(self.inner_converged)),
            covariance=self.covariance_method,
            covariance_undetermined=list(self.undetermined),
            start_ofvs=list(self.start_ofvs),
            seconds_compile=self.seconds_compile,
            seconds_total=self.seconds_total,
        )
        return {
            k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in out.items()
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {
            "population_parameters.csv": self.population_parameters,
            "random_effects.csv": self.random_effects,
            "omega.csv": self.omega,
            "individual_parameters.csv": self.individual_parameters,
        }
        if self.predictions is not None:
            out["predictions.csv"] = self.predictions
        return out


def forward_only(problem: AbstractFitProblem) -> bool:
    """Whether the problem's simulations support only forward-mode derivatives (Diffrax's
    `ForwardMode` adjoint): then the outer gradient is taken in forward mode."""
    return isinstance(getattr(problem.options, "adjoint", None), dfx.ForwardMode)


def _ofv(theta, args):
    return population_objective(theta, args)[0]


class OuterState(eqx.Module):
    """The FOCE-I program's state (what a checkpoint holds): the accepted θ and, there, the
    OFV, each subject's OFV_i [n] and exact gradient g_i [n, q], the outer curvature, the EBEs
    ξ̂ [n, r] and whether each inner fit converged; the evaluations done (the first at θ₀),
    whether the fit stopped, the damping, the next candidate θ, and each subject's OFV_i at
    θ₀ (`start_values`: finite or not — the screen for subjects that cannot be fitted)."""

    theta: Float[Array, " q"]
    ofv: Float[Array, ""]
    values: Float[Array, " n"]
    scores: Float[Array, "n q"]
    curvature: Float[Array, "q q"]
    xi: Float[Array, "n r"]
    inner_converged: Bool[Array, " n"]
    evaluations: Int[Array, ""]
    stopped: Bool[Array, ""]
    damping: Float[Array, ""]
    candidate: Float[Array, " q"]
    start_values: Float[Array, " n"]

    @property
    def iterations(self) -> int:
        """Outer steps tried (the first evaluation is θ₀'s)."""
        return max(int(self.evaluations) - 1, 0)

    def converged(self, max_steps: int) -> bool:
        """Stopped by its criteria, not by `max_steps` or a damping that could not find a
        decrease."""
        return bool(
            np.isfinite(float(self.ofv))
            and self.iterations < max_steps
            and float(self.damping) <= 1e10
        )


def outer_start(theta0: Any, xi0: Any) -> OuterState:
    """The FOCE-I program's state before its first evaluation (of θ₀, EBEs warm from ξ₀)."""
    theta0, xi0 = jnp.asarray(theta0), jnp.asarray(xi0)
    n, q = xi0.shape[0], theta0.shape[0]
    return OuterState(
        theta=theta0,
        ofv=jnp.asarray(jnp.inf),
        values=jnp.zeros(n),
        scores=jnp.zeros((n, q)),
        curvature=jnp.eye(q),
        xi=xi0,
        inner_converged=jnp.zeros(n, bool),
        evaluations=jnp.asarray(0, dtype=jnp.int64),
        stopped=jnp.asarray(False, dtype=bool),
        damping=jnp.asarray(1e-2, dtype=jnp.float64),
        candidate=theta0,
        start_values=jnp.zeros(n),
    )


@eqx.filter_jit
def _outer(model, problems, z, xi0, theta0, inner_max_steps, max_steps, rtol, atol):
    solver = optx.BFGS(rtol=rtol, atol=atol)
    args = (model, problems, z, xi0, inner_max_steps)
    # the gradient by forward mode (q directions) where the simulations allow no other
    options = {"autodiff_mode": "fwd"} if forward_only(problems) else {}
    solution = optx.minimise(
        _ofv, solver, theta0, args=args, options=options, max_steps=max_steps, throw=False
    )
    return solution.value, solution.result == optx.RESULTS.successful, solution.stats["num_steps"]


def _values_and_scores(model, problems, z, xi0, theta, inner_max_steps):
    """Every subject's OFV_i (−2 log L_i, FOCE-I) and its exact gradient g_i in θ [n, q] at
    θ, the EBEs re-fitted warm from ξ₀."""
    inner = fit_subjects(model, problems, jax.lax.stop_gradient(theta), z, xi0, inner_max_steps)
    forward = forward_only(problems)

    def one(problem, zi, x):
        if forward:  # where the simulations allow no reverse mode: one forward pass
            return subject_value_and_score(model, problem, theta, zi, x)
        return jax.value_and_grad(lambda t: subject_objective(model, problem, t, zi, x))(theta)

    values, scores = jax.vmap(one)(problems, z, inner.xi)
    return values, scores, inner.xi, inner.converged


def _subjects_part(model, problems, z, xi, weights, theta, with_curvature, settings):
    """The per-subject part of a FOCE-I evaluation (on one device's subjects when sharded):
    OFV_i, g_i, ξ̂_i and their inner fits' convergence, and the subjects' summed expected
    information (zero unless `with_curvature` and `information` is `expected`). Subjects of
    weight 0 (padding to a multiple of the devices) count nothing."""
    inner_max_steps, information = settings
    values, scores, xi, inner_ok = _values_and_scores(
        model, problems, z, xi, theta, inner_max_steps
    )
    real = weights > 0
    values = jnp.where(real, values, 0.0)
    scores = jnp.where(real[:, None], scores, 0.0)
    q = theta.shape[0]
    if information != "expected":
        return values, scores, xi, inner_ok, jnp.zeros((q, q))

    def fisher():
        each = jax.vmap(lambda p, zi, x: expected_information(model, p, theta, zi, x))(
            problems, z, xi
        )
        return 2.0 * jnp.sum(jnp.where(real[:, None, None], each, 0.0), axis=0)

    # a point evaluated alone takes no step: its curvature is not needed
    curvature = jax.lax.cond(with_curvature, fisher, lambda: jnp.zeros((q, q)))
    return values, scores, xi, inner_ok, curvature


def _on_subject_shards(part, mesh):
    """`part` (`_subjects_part`) run by each device of `mesh` on its own subjects
    (`jax.shard_map`: every device's vmapped while-loops run as long as its own slowest
    subject, not the cohort's), the information summed over devices; `part` itself on one."""
    if mesh is None:
        return part

    subject, replicated = P(SUBJECT_AXIS), P()

    def local(model, problems, z, xi, weights, theta, with_curvature, settings):
        out = part(model, problems, z, xi, weights, theta, with_curvature, settings)
        return (*out[:4], jax.lax.psum(out[4], SUBJECT_AXIS))

    def sharded(model, problems, z, xi, weights, theta, with_curvature, settings):
        arrays, static = eqx.partition((model, problems, z, xi, weights, theta), eqx.is_array)
        specs = (replicated, subject, subject, subject, subject, replicated)
        specs = tuple(jax.tree.map(lambda _, s=s: s, a) for s, a in zip(specs, arrays))

        def on_device(arrays, with_curvature):
            return local(*eqx.combine(arrays, static), with_curvature, settings)

        return jax.shard_map(
            on_device,
            mesh=mesh,
            in_specs=(specs, replicated),
            out_specs=(subject, subject, subject, subject, replicated),
            check_vma=False,
        )(arrays, with_curvature)

    return sharded


def _levenberg_marquardt_outer(
    model,
    problems,
    z,
    weights,
    state,
    until,
    stepping,
    inner_max_steps,
    rtol,
    atol,
    information,
    mesh=None,
):
    """The outer fit by scoring: Levenberg–Marquardt steps on the OFV with the exact
    gradient and a Fisher-information curvature, the damping adapted (÷3 after a step that
    lowers the OFV, ×4 after one that does not). Stops when the step predicts an OFV
    decrease below `atol`·(`rtol`/1e-8). The curvature (`information`): `"empirical"`, the
    outer product of the subjects' exact gradients, ½Σ g_i g_iᵀ (BHHH: each subject an
    independent observation of θ), or `"expected"`, twice the subjects' expected information
    in the FOCE-I linearisation (`expected_information`), which, unlike BHHH, does not need
    many subjects to be good.

    From `state` (an `OuterState`), evaluations continue up to number `until` (θ₀'s is
    number 0) and the new state is returned: the host runs the fit in segments (checkpoints,
    progress), and with `until` = 0 and `stepping` False (no curvature: no step follows) the
    same program evaluates one point (the screen at the start, the EBEs, OFV and per-subject
    gradients at an estimate, the covariance step's gradients) — every FOCE-I quantity of a
    fit comes from this one program.

    `weights` [n]: 1 for a subject, 0 for padding; with a `mesh`, the subject axis is split
    over its devices (`_on_subject_shards`)."""
    threshold = atol * rtol / 1e-8
    q = state.theta.shape[0]
    part = _on_subject_shards(_subjects_part, mesh)

    def evaluate(theta, xi, with_curvature):
        values, scores, xi, inner_ok, fisher = part(
            model, problems, z, xi, weights, theta, with_curvature, (inner_max_steps, information)
        )
        ofv = jnp.sum(values)
        ok = jnp.isfinite(ofv) & jnp.all(jnp.isfinite(scores))
        if information == "expected":
            curvature = jnp.where(with_curvature, fisher, jnp.eye(q))
            ok = ok & jnp.all(jnp.isfinite(curvature))
            curvature = jnp.where(ok, curvature, jnp.eye(q))
        else:
            # centred: far from the optimum the subjects' shared gradient would dominate the
            # outer product and stall the step along it (padding's zero rows left out)
            real = (weights > 0)[:, None]
            mean = jnp.sum(scores, axis=0) / jnp.sum(weights)
            centred = jnp.where(real, scores - mean, 0.0)
            curvature = 0.5 * centred.T @ centred
        return jnp.where(ok, ofv, jnp.inf), (values, scores, curvature, xi, inner_ok)

    # the loop evaluates the candidate θ it carries, so `evaluate` (every subject's solves
    # and their derivatives: most of the program) is traced once; its first pass evaluates
    # θ₀ against an OFV of +∞
    def cond(s):
        return (s.evaluations <= until) & ~s.stopped

    def body(s):
        trial_ofv, trial = evaluate(s.candidate, s.xi, stepping)
        first = s.evaluations == 0
        better = trial_ofv < s.ofv
        theta, ofv, (values, scores, curvature, xi, inner_ok) = jax.tree.map(
            lambda new, old: jnp.where(better, new, old),
            (s.candidate, trial_ofv, trial),
            (s.theta, s.ofv, (s.values, s.scores, s.curvature, s.xi, s.inner_converged)),
        )
        grad = jnp.sum(scores, axis=0)
        scale = jnp.diag(curvature) + 1e-12
        # converged: the next undamped step predicts a decrease ½gᵀB⁻¹g below the threshold,
        # or a step not heavily damped just gained less (e.g. an error term drifting along
        # the OFV's plateau towards zero, where B models the OFV poorly)
        newton = jnp.linalg.solve(curvature + 1e-12 * jnp.diag(scale), grad)
        gained = s.ofv - ofv
        small = (
            better
            & ~first
            & ((0.5 * grad @ newton < threshold) | ((gained < threshold) & (s.damping < 10.0)))
        )
        damping = jnp.where(
            first,
            s.damping,
            jnp.where(better, jnp.maximum(s.damping / 3.0, 1e-10), s.damping * 4.0),
        )
        step = -jnp.linalg.solve(curvature + damping * jnp.diag(scale), grad)
        # at most half a unit per coordinate (a factor 1.65 on log scale): a long step
        # towards a zero error term can land on the OFV's plateau there and stall
        step = jnp.clip(step, -0.5, 0.5)
        return OuterState(
            theta=theta,
            ofv=ofv,
            values=values,
            scores=scores,
            curvature=curvature,
            xi=xi,
            inner_converged=inner_ok,
            evaluations=s.evaluations + 1,
            stopped=small | (damping > 1e10) | ~jnp.isfinite(ofv),
            damping=damping,
            candidate=theta + step,
            start_values=jnp.where(first, trial[0], s.start_values),
        )

    return jax.lax.while_loop(cond, body, state)


@eqx.filter_jit
def _scoring_outer(
    model, problems, z, weights, state, until, stepping, inner_max_steps, rtol, atol, mesh
):
    """Levenberg–Marquardt scoring with the empirical (BHHH) information."""
    return _levenberg_marquardt_outer(
        model, problems, z, weights, state, until, stepping, inner_max_steps, rtol, atol,
        "empirical", mesh,
    )  # fmt: skip


@eqx.filter_jit
def _fisher_outer(
    model, problems, z, weights, state, until, stepping, inner_max_steps, rtol, atol, mesh
):
    """Levenberg–Marquardt scoring with the expected (FOCE-I linearised) information."""
    return _levenberg_marquardt_outer(
        model, problems, z, weights, state, until, stepping, inner_max_steps, rtol, atol,
        "expected", mesh,
    )  # fmt: skip


def _cpu_compiled(jitted):
    """`jitted` (an `eqx.filter_jit` function) compiled with mgjax's XLA options on the CPU,
    once per input structure, shapes and static values in this process (the options roughly
    halve the compile of programs that differentiate through Diffrax solves)."""
    programs: dict[Any, Any] = {}

    @functools.wraps(jitted)
    def call(*args):
        leaves, treedef = jax.tree.flatten(args)
        key = (
            treedef,
            tuple(
                (np.shape(x), str(x.dtype)) if hasattr(x, "dtype") else ("value", x) for x in leaves
            ),
        )
        if key not in programs:
            programs[key] = jitted.lower(*args).compile(cpu_compiler_options())
        return programs[key](*args)

    return call


#: compiled outer fits of this process, by population model, problem structure and settings
_COMPILED: dict[Any, Any] = {}


#: outer optimisers of FOCE-I
OUTER_METHODS = {"scoring": _scoring_outer, "fisher": _fisher_outer, "bfgs": _outer}


def _count(k: int) -> Array:
    return jnp.asarray(k, dtype=jnp.int64)


def _flag(b: bool) -> Array:
    return jnp.asarray(b, dtype=bool)


def _compiled_outer(outer, *args):
    """The outer fit `OUTER_METHODS[outer]` compiled for these arguments' structure, shapes
    and static values (once per process: a later cohort of the same structure and size, e.g.
    a replicate, reuses it). The Levenberg–Marquardt programs are traced with Equinox's
    runtime checks as NaN (a subject's failed check reaches its objective, not the fit) and,
    when JAX's persistent compilation cache is on (the command line), stored: a later run on
    a cohort of the same structure and size reads the program back instead of tracing it
    (`mgjax.runtime.compile_program`)."""
    leaves, treedef = jax.tree.flatten(args)
    key = (
        outer,
        treedef,
        tuple((np.shape(x), str(x.dtype)) if hasattr(x, "dtype") else ("value", x) for x in leaves),
    )
    if key in _COMPILED:
        return _COMPILED[key]
    dynamic, static = eqx.partition(args, eqx.is_array)
    dynamic_leaves, dynamic_tree = jax.tree.flatten(dynamic)
    static_text = str(treedef) + repr([x for x in leaves if not hasattr(x, "dtype")])
    if outer == "bfgs" or " at 0x" in static_text:  # not storable: compiled in this process
        with errors_as_nan():
            lowered = OUTER_METHODS[outer].lower(*args)
        # mgjax's XLA options on the CPU: the ODE outer fits compile in ~60 % of the time
        _COMPILED[key] = lowered.compile(cpu_compiler_options())
        return _COMPILED[key]
    state_tree = jax.tree.structure(args[4])  # the program returns the state it was given
    mesh = args[-1]
    in_shardings = None
    if mesh is not None:  # problems, z and weights split by subject, the rest on every device
        subject, replicated = NamedSharding(mesh, P(SUBJECT_AXIS)), NamedSharding(mesh, P())
        placed = [
            jax.tree.map(lambda _, k=k: subject if k in (1, 2, 3) else replicated, part)
            for k, part in enumerate(dynamic)
        ]
        in_shardings = (jax.tree.leaves(placed),)

    def flat(arrays):
        full = eqx.combine(jax.tree.unflatten(dynamic_tree, arrays), static)
        return jax.tree.leaves(OUTER_METHODS[outer](*full))

    with errors_as_nan():
        program = compile_program(
            f"population-{outer}",
            flat,
            (dynamic_leaves,),
            static=static_text,
            in_shardings=in_shardings,
            compiler_options=cpu_compiler_options(),
        )

    def call(*call_args):
        arrays = jax.tree.leaves(eqx.filter(call_args, eqx.is_array))
        return jax.tree.unflatten(state_tree, program(arrays))

    _COMPILED[key] = call
    return call


def _padded(x: Any, n: int) -> np.ndarray:
    """`x` with its leading axis filled up to `n` by repeating its first entry."""
    x = np.asarray(x)
    return np.concatenate([x, np.repeat(x[:1], n - x.shape[0], axis=0)]) if n > x.shape[0] else x


#: the `OuterState` fields with a subject axis
_PER_SUBJECT = ("values", "scores", "xi", "inner_converged", "start_values")


class _FoceProgram:
    """The FOCE-I program of a cohort, compiled once: `run(state, max_steps, after)` fits
    (Levenberg–Marquardt with `outer`'s curvature; `fisher`'s for `bfgs`, whose own program
    only moves θ), `at(θ, ξ₀)` evaluates θ alone.

    On several `devices` the subjects are split over them (the cohort padded to a multiple of
    their number with weightless copies of its first subject); the states it takes and gives
    hold the cohort's own subjects only."""

    def __init__(self, outer, model, stacked, z, xi0, theta0, inner_max_steps, rtol, atol, devices):
        self.outer = "fisher" if outer == "bfgs" else outer
        self.n = n = int(np.shape(xi0)[0])
        self.padded_n = -(-n // len(devices)) * len(devices)
        if self.padded_n > n:
            stacked, z = jax.tree.map(lambda x: _padded(x, self.padded_n), (stacked, z))
        weights = jnp.asarray(np.arange(self.padded_n) < n, dtype=jnp.float64)
        self.mesh = self.replicated = None
        if len(devices) > 1:
            self.mesh = Mesh(np.asarray(devices), (SUBJECT_AXIS,))
            self.replicated = NamedSharding(self.mesh, P())
            stacked, z, weights = jax.device_put(
                (stacked, z, weights), NamedSharding(self.mesh, P(SUBJECT_AXIS))
            )
        self.fixed = (model, stacked, z, weights)
        self.settings = (inner_max_steps, rtol, atol, self.mesh)
        t0 = time.perf_counter()
        start = self._placed(outer_start(theta0, xi0))
        self.program = _compiled_outer(
            self.outer, *self.fixed, start, _count(0), _flag(True), *self.settings
        )
        self.seconds_compile = time.perf_counter() - t0

    def _placed(self, state: OuterState) -> OuterState:
        """`state` padded to the program's subjects and placed on every device."""
        if self.mesh is None:  # one device: nothing padded
            return state
        padded = {f: _padded(getattr(state, f), self.padded_n) for f in _PER_SUBJECT}
        return jax.device_put(dataclasses.replace(state, **padded), self.replicated)

    def _call(self, state: OuterState, until: int, stepping: bool) -> OuterState:
        out = self.program(
            *self.fixed, self._placed(state), _count(until), _flag(stepping), *self.settings
        )
        if self.mesh is None:
            return out
        # on the host: what follows (tables, covariance step) runs on one device
        out = jax.tree.map(np.asarray, out)
        return dataclasses.replace(out, **{f: getattr(out, f)[: self.n] for f in _PER_SUBJECT})

    def run(
        self,
        state: OuterState,
        max_steps: int,
        after: Callable[[OuterState], None] | None = None,
    ) -> OuterState:
        """Continue from `state` until the fit stops or `max_steps` steps are spent; with
        `after`, one step at a time, `after(state)` after each (checkpoints, progress)."""
        if after is None:
            return self._call(state, max_steps, True)
        while not bool(state.stopped) and int(state.evaluations) <= max_steps:
            state = self._call(state, int(state.evaluations), True)  # one evaluation
            after(state)
        return state

    def at(self, theta, xi0) -> OuterState:
        """θ evaluated alone (EBEs warm from ξ₀; no curvature)."""
        return self._call(outer_start(theta, xi0), 0, False)


#: SAEM runs in segments of this many iterations (a checkpoint after each)
SAEM_SEGMENT = 50


def _compiled_saem(model, stacked, z, state, steps, keys, active, settings):
    """A SAEM segment compiled for these shapes and settings (once per process)."""
    leaves, treedef = jax.tree.flatten((stacked, z, state))
    key_ = ("saem", model, treedef, tuple((np.shape(x), str(x.dtype)) for x in leaves), settings)
    key_ += (steps.shape,)
    if key_ not in _COMPILED:
        lowered = saem_segment.lower(model, stacked, z, state, steps, keys, active, settings)
        _COMPILED[key_] = lowered.compile(cpu_compiler_options())
    return _COMPILED[key_]


def _fingerprint(*parts) -> str:
    """What identifies a SAEM run (its inputs, settings and random key): a checkpoint of
    another run is never resumed."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(parts):
        digest.update(np.asarray(leaf).tobytes() if hasattr(leaf, "shape") else repr(leaf).encode())
    return digest.hexdigest()


def _run_saem(model, stacked, z, theta0, key, settings, checkpoint, progress):
    """SAEM in segments of `SAEM_SEGMENT` iterations, each one compiled program; after each
    the state goes to `checkpoint` (when given) atomically, and a rerun with the same inputs
    resumes from it. Returns (SaemOutput, seconds spent compiling)."""
    steps, keys = saem_schedule(settings, key)
    total = int(steps.shape[0])
    size = min(SAEM_SEGMENT, total)
    segments = -(-total // size)
    pad = segments * size - total
    steps = jnp.concatenate([steps, jnp.full(pad, 1e9)])
    keys = jnp.concatenate([keys, keys[:pad]])
    active = jnp.arange(segments * size) < total
    state = saem_start(model, z, theta0, settings)
    fingerprint = _fingerprint(model.theta_names, stacked, z, theta0, key, repr(settings))
    traces, acceptances, done = [], [], 0
    if checkpoint is not None and Path(checkpoint).exists():
        state, traces, acceptances, done = _load_checkpoint(checkpoint, state, fingerprint)
    t0 = time.perf_counter()
    compiled = _compiled_saem(
        model, stacked, z, state, steps[:size], keys[:size], active[:size], settings
    )
    seconds_compile = time.perf_counter() - t0
    for segment in range(done, segments):
        part = slice(segment * size, (segment + 1) * size)
        state, trace, acceptance = compiled(
            model, stacked, z, state, steps[part], keys[part], active[part], settings
        )
        traces.append(np.asarray(trace))
        acceptances.append(np.asarray(acceptance))
        if checkpoint is not None:
            _save_checkpoint(checkpoint, state, traces, acceptances, segment + 1, fingerprint)
        if progress is not None:
            last = min((segment + 1) * size, total)
            theta = traces[-1][last - 1 - part.start]
            progress(last - settings.burn_in, settings.iterations, theta, float("nan"))
    burn = settings.burn_in
    trace = jnp.asarray(np.concatenate(traces)[burn:total])
    acceptance = jnp.asarray(np.concatenate(acceptances)[burn:total])
    return saem_output(model, z, state, trace, acceptance), seconds_compile


def _state_arrays(name: str, state: Any) -> dict[str, np.ndarray]:
    """A state pytree's leaves as checkpoint arrays `name_0`, `name_1`, … (none for None)."""
    if state is None:
        return {}
    return {f"{name}_{k}": np.asarray(x) for k, x in enumerate(jax.tree.leaves(state))}


def _state_from(saved: Mapping[str, Any], name: str, template: Any) -> Any:
    """The state `_state_arrays` wrote under `name`, in `template`'s structure (None if
    absent)."""
    if f"{name}_0" not in saved:
        return None
    leaves, treedef = jax.tree.flatten(template)
    arrays = [jnp.asarray(saved[f"{name}_{k}"]) for k in range(len(leaves))]
    return jax.tree.unflatten(treedef, arrays)


def _write_checkpoint(path, arrays: dict[str, Any], fingerprint: str) -> None:
    """`arrays` and the run's fingerprint to `path`, atomically (a kill mid-write leaves the
    previous checkpoint)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, fingerprint=np.asarray(fingerprint), **arrays)
    os.replace(partial, path)


def _read_checkpoint(path, fingerprint: str, fit: str) -> dict[str, np.ndarray]:
    """The arrays of the checkpoint at `path`, refused unless it is this same run's."""
    with np.load(path) as saved:
        if str(saved["fingerprint"]) != fingerprint:
            raise ValueError(
                f"{path} is the checkpoint of another {fit} (different data, model, "
                "settings or seed); remove it to start afresh"
            )
        return dict(saved)


@dataclasses.dataclass(frozen=True)
class FoceCheckpoint:
    """Where a FOCE-I fit stands: the start being fitted and its `OuterState` (None: not
    begun), the OFVs of the starts done and the best of them (state, converged, steps)."""

    start: int = 0
    current: OuterState | None = None
    start_ofvs: tuple[float, ...] = ()
    best: tuple[OuterState, bool, int] | None = None

    def save(self, path, fingerprint: str) -> None:
        best_state, converged, steps = self.best or (None, False, 0)
        arrays = dict(
            start=np.asarray(self.start),
            start_ofvs=np.asarray(self.start_ofvs, dtype=float),
            best_converged=np.asarray(converged),
            best_steps=np.asarray(steps),
        )
        arrays |= _state_arrays("current", self.current) | _state_arrays("best", best_state)
        _write_checkpoint(path, arrays, fingerprint)

    @classmethod
    def load(cls, path, template: OuterState, fingerprint: str) -> FoceCheckpoint:
        """The checkpoint at `path` (none there: a fresh one) of this same fit."""
        if path is None or not Path(path).exists():
            return cls()
        saved = _read_checkpoint(path, fingerprint, "FOCE-I fit")
        best = _state_from(saved, "best", template)
        return cls(
            start=int(saved["start"]),
            current=_state_from(saved, "current", template),
            start_ofvs=tuple(float(v) for v in saved["start_ofvs"]),
            best=None
            if best is None
            else (best, bool(saved["best_converged"]), int(saved["best_steps"])),
        )


def _save_checkpoint(path, state, traces, acceptances, done, fingerprint) -> None:
    """The SAEM state after `done` segments."""
    arrays = _state_arrays("state", state) | {
        "trace": np.concatenate(traces),
        "acceptance": np.concatenate(acceptances),
        "done": np.asarray(done),
    }
    _write_checkpoint(path, arrays, fingerprint)


def _load_checkpoint(path, template, fingerprint):
    """(state, traces, acceptances, segments done) from a checkpoint of this same run."""
    saved = _read_checkpoint(path, fingerprint, "SAEM run")
    state = _state_from(saved, "state", template)
    return state, [saved["trace"]], [saved["acceptance"]], int(saved["done"])


@eqx.filter_jit
def _curvatures(model, problems, theta, z, xi_hat):
    """Each subject's Laplace curvature H_i at its EBE."""
    return jax.vmap(lambda p, zi, x: value_gradient_curvature(model, p, theta, zi, x)[2])(
        problems, z, xi_hat
    )


@eqx.filter_jit
def _importance_sampling(model, problems, theta, z, xi_hat, curvature, key, samples):
    return importance_sampling_ofv(model, problems, theta, z, xi_hat, curvature, key, samples)


@eqx.filter_jit
def _likelihoods(model, problems, theta, z, xi):
    """Each subject's −log p(y_i | u_i(ξ_i)) (a simulation, no derivatives)."""
    return jax.vmap(lambda p, zi, x: p.negative_log_likelihood(model.individual(theta, zi, x)))(
        problems, z, xi
    )


@_cpu_compiled
@eqx.filter_jit
def _expected_information(model, problems, theta, z, xi):
    """Σ_i of the subjects' expected information about θ (FOCE-I linearisation at ξ̂)."""
    fisher = jax.vmap(lambda p, zi, x: expected_information(model, p, theta, zi, x))(
        problems, z, xi
    )
    return jnp.sum(fisher, axis=0)


def _curvature(program: _FoceProgram, at: OuterState, step=1e-4):
    """(R = ½∇²OFV by central differences of the exact gradient, each subject's gradient
    of ½OFV_i [n, q]) at the point `at` that `program` evaluated: 2q more points, each the
    FOCE-I program's evaluation (EBEs re-fitted warm from `at`'s); a point whose OFV is not
    finite leaves its column NaN."""
    theta = np.asarray(at.theta)
    h = step * np.maximum(1.0, np.abs(theta))
    columns = []
    for k in range(theta.shape[0]):
        sums = []
        for sign in (1.0, -1.0):
            point = program.at(jnp.asarray(theta).at[k].add(sign * h[k]), at.xi)
            finite = np.isfinite(float(point.ofv))
            sums.append(np.asarray(point.scores).sum(0) if finite else np.full(len(theta), np.nan))
        columns.append((sums[0] - sums[1]) / (2.0 * h[k]))
    hessian = 0.5 * np.stack(columns, axis=1)
    return 0.5 * (hessian + hessian.T), 0.5 * np.asarray(at.scores)


#: R's eigenvalues below this fraction of its largest count as zero (NONMEM: "R matrix
#: algorithmically singular")
SINGULAR_RATIO = 1e-10


def _covariance(hessian: np.ndarray, scores: np.ndarray, method: str) -> np.ndarray:
    """R⁻¹ or the sandwich; the entries of θ in a direction where R is singular (not
    determined by the data, e.g. an error term at its boundary) get NaN variances."""
    values, vectors = np.linalg.eigh(hessian)
    null = values <= SINGULAR_RATIO * max(float(np.max(np.abs(values))), 1e-300)
    r_inv = np.linalg.pinv(hessian, hermitian=True)
    cov = r_inv if method == "hessian" else r_inv @ (scores.T @ scores) @ r_inv
    undetermined = np.any(np.abs(vectors[:, null]) > 1e-3, axis=1)
    cov = cov.copy()
    cov[undetermined, :] = np.nan
    cov[:, undetermined] = np.nan
    return cov


def _propagate(jac: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """SDs of derived quantities J·θ: NaN where a quantity depends on an undetermined θ."""
    known = np.isfinite(np.diag(cov))
    safe = np.where(np.isfinite(cov), cov, 0.0)
    var = np.diag(jac @ safe @ jac.T)
    touches = (np.abs(jac) > 0) @ ~known
    return np.where(touches, np.nan, np.sqrt(np.maximum(var, 0.0)))


def fit_population(
    problems: Sequence[AbstractFitProblem] | AbstractFitProblem,
    model: PopulationModel,
    *,
    subjects: Sequence[str] | None = None,
    covariates: pd.DataFrame | Mapping[str, Any] | None = None,
    start: Mapping[str, float] | None = None,
    omega_start: float | Mapping[str, float] = OMEGA_START,
    covariance: str = "hessian",
    units: Mapping[str, str] | None = None,
    max_steps: int = OUTER_MAX_STEPS,
    rtol: float = OUTER_RTOL,
    atol: float = OUTER_ATOL,
    inner_max_steps: int = INNER_MAX_STEPS,
    method: str = "foce-i",
    saem_settings: SaemSettings | None = None,
    importance_samples: int | None = None,
    seed: int = 0,
    outer: str = "fisher",
    starts: int = 1,
    start_spread: float = START_SPREAD,
    checkpoint: str | os.PathLike | None = None,
    progress: Callable[[int, int, np.ndarray], None] | None = None,
    devices: Sequence[Any] | None = None,
) -> PopulationResult:
    """Fit `model` to the subjects' `problems` (a list, or one stacked pytree) by FOCE-I
    (`method="foce-i"`) or SAEM (`"saem"`, `saem_settings`, random numbers from `seed`).

    - `covariates`: a table indexed by subject (or a mapping column → values in subject
      order) holding the covariates of `model.covariates`;
    - `start`: typical values to start from (physical units, by name; default each
      quantity's median starting value over the subjects); `omega_start`: SDs of the
      random effects (log scale);
    - `covariance`: `hessian` (R⁻¹, the inverse Hessian of −log L; default), `sandwich`
      (R⁻¹SR⁻¹, NONMEM's default, robust to a misspecified residual model) — both of the
      FOCE-I OFV —, `expected` (the inverse of the expected information in the FOCE-I
      linearisation, `expected_information`: first derivatives of the model only, the
      cheapest; PFIM's and Monolix's "by linearisation") or `stochastic` (Monolix's: the
      information by Louis' identity from Markov chains at the estimate,
      `saem_settings.information_draws` draws; with SAEM it needs simulations only, so stiff
      ODE models get SEs);
    - `covariance="none"` skips the covariance step (SEs NaN); with SAEM it also skips the
      FOCE-I linearisation, so the whole fit needs simulations of the structural model only
      (no derivatives — the route for stiff ODE models): the EBEs are then the chains'
      conditional means, `ofv` is NaN and the importance-sampling OFV is the likelihood;
    - `outer` (FOCE-I): the outer optimiser — `fisher` (default; Levenberg–Marquardt with the
      expected information of the FOCE-I linearisation as curvature), `scoring` (the same
      with the subjects' gradients' outer product, BHHH) or `bfgs` (Optimistix's BFGS);
    - `starts` (FOCE-I): outer fits from the start and from `starts` − 1 perturbed ones (each
      log-scale typical value and log ω moved by N(0, `start_spread`²), others by that
      fraction of their size; random numbers from `seed`); the lowest OFV wins, every
      start's OFV is in `start_ofvs`;
    - `checkpoint`: a file the state goes to after every FOCE-I outer iteration (Levenberg–
      Marquardt outers; per start) or every `SAEM_SEGMENT` SAEM iterations; a rerun with the
      same inputs resumes from it and ends where an uninterrupted fit does (a killed run
      loses at most one iteration or segment); `progress(iteration, iterations, θ, OFV)` is
      called after each (FOCE-I: `iterations` is `max_steps`; SAEM: the OFV is NaN);
    - `importance_samples`: draws per subject of the importance-sampling OFV (0: skip;
      default `IMPORTANCE_SAMPLES` for SAEM, 0 for FOCE-I, whose OFV is its own);
    - `devices`: the devices FOCE-I's program splits the subjects over (default: all local
      devices; each runs its own subjects' inner fits and derivatives, the outer step sums
      them; the estimates are those of one device). SAEM and the BFGS outer's θ moves run on
      one device.

    Whatever the method, the EBEs, `ofv` (FOCE-I's −2 log L), the covariance step and the
    tables are taken at the estimate, so the methods' results compare one to one.

    Subjects whose objective is not finite at the start (e.g. a simulation that fails)
    are left out and listed in `excluded`; they never poison the others."""
    t_start = time.perf_counter()
    if covariance not in COVARIANCE_METHODS:
        raise ValueError(f"covariance {covariance!r}: use one of {', '.join(COVARIANCE_METHODS)}")
    if method not in METHODS:
        raise ValueError(f"method {method!r}: use one of {', '.join(METHODS)}")
    if starts < 1 or (starts > 1 and method != "foce-i"):
        raise ValueError(f"starts={starts}: at least 1, and more than 1 for FOCE-I only")
    if outer not in OUTER_METHODS:
        raise ValueError(f"outer {outer!r}: use one of {', '.join(OUTER_METHODS)}")
    if importance_samples is None:
        importance_samples = IMPORTANCE_SAMPLES if method == "saem" else 0
    stacked, subjects, first, z, theta0 = prepare(
        problems, model, subjects, covariates, start, omega_start
    )
    n = len(subjects)
    xi0 = jnp.zeros((n, model.n_random))
    devices = tuple(devices or jax.local_devices())

    # SAEM without the FOCE-I covariance step needs simulations only (no derivative of the
    # model in the quantities with a random effect)
    simulation_only = method == "saem" and covariance in ("none", "stochastic")
    program = None  # every FOCE-I quantity comes from one compiled program
    first_evaluation = None  # the first start's evaluation of θ₀, when the screen passed all
    seconds_compile = 0.0
    if simulation_only:
        finite = np.isfinite(np.asarray(_likelihoods(model, stacked, theta0, z, xi0)))
    else:
        program = _FoceProgram(
            outer, model, stacked, z, xi0, theta0, inner_max_steps, rtol, atol, devices
        )
        seconds_compile += program.seconds_compile
        # the screen is the outer fit's first evaluation (θ₀, its curvature and first step)
        screen = program.run(outer_start(theta0, xi0), 0)
        finite = np.isfinite(np.asarray(screen.start_values))
        if np.all(finite) and np.isfinite(float(screen.ofv)):
            xi0 = screen.xi  # the EBEs at θ₀: the outer fit's warm start
            first_evaluation = screen
    keep = np.flatnonzero(finite)
    if keep.size == 0:
        raise ValueError("no subject's objective is finite at the start; check data and start")
    excluded = tuple(s for s, ok in zip(subjects, finite) if not ok)
    subjects = tuple(subjects[i] for i in keep)
    if excluded:  # the cohort without them (its own shapes: compiled again)
        stacked, z, xi0 = _take(stacked, keep), z[keep], xi0[keep]
        if program is not None:
            program = _FoceProgram(
                outer, model, stacked, z, xi0, theta0, inner_max_steps, rtol, atol, devices
            )
            seconds_compile += program.seconds_compile

    trace = None
    start_ofvs: list[float] = []
    key_saem, key_sampling, key_information = jax.random.split(jax.random.PRNGKey(seed), 3)
    settings = saem_settings or SaemSettings()
    if method == "foce-i":
        template = outer_start(theta0, xi0)
        fingerprint = _fingerprint(
            "foce-i", outer, model.theta_names, stacked, z, theta0, max_steps, rtol, atol,
            inner_max_steps, starts, start_spread, seed,
        )  # fmt: skip
        saved = FoceCheckpoint.load(checkpoint, template, fingerprint)
        start_ofvs, best = list(saved.start_ofvs), saved.best
        for j, t0 in enumerate(_perturbed_starts(model, first, theta0, starts, start_spread, seed)):
            if j < saved.start:
                continue
            if outer == "bfgs":  # (not checkpointed within a start)
                t_compile = time.perf_counter()
                args = (model, stacked, z, xi0, t0, inner_max_steps, max_steps, rtol, atol)
                compiled = _compiled_outer("bfgs", *args)
                seconds_compile += time.perf_counter() - t_compile if best is None else 0.0
                theta_b, converged_b, steps_b = compiled(*args)
                run = (program.at(theta_b, xi0), bool(converged_b), int(steps_b))
            else:
                state = saved.current if j == saved.start and saved.current else None
                after = None
                if checkpoint is not None or progress is not None:

                    def after(s, j=j, best=best):
                        if checkpoint is not None:
                            FoceCheckpoint(j, s, tuple(start_ofvs), best).save(
                                checkpoint, fingerprint
                            )
                        if progress is not None:
                            progress(s.iterations, max_steps, np.asarray(s.theta), float(s.ofv))

                if state is None and j == 0 and first_evaluation is not None:
                    state = first_evaluation  # θ₀ evaluated by the screen: not again
                    if after is not None:
                        after(state)
                state = program.run(state or outer_start(t0, xi0), max_steps, after)
                run = (state, state.converged(max_steps), state.iterations)
            start_ofvs.append(float(run[0].ofv))
            if best is None or start_ofvs[-1] < float(best[0].ofv):
                best = run
            if checkpoint is not None:  # this start done: a resumed run begins the next
                FoceCheckpoint(j + 1, None, tuple(start_ofvs), best).save(checkpoint, fingerprint)
        estimate, converged, steps = best
        theta = estimate.theta
    else:
        output, seconds_compile_saem = _run_saem(
            model, stacked, z, theta0, key_saem, settings, checkpoint, progress
        )
        seconds_compile += seconds_compile_saem
        theta, trace = output.theta, np.asarray(output.trace)
        converged, steps = bool(np.all(np.isfinite(trace[-1]))), settings.iterations
        if not simulation_only:  # the FOCE-I linearisation at SAEM's estimate
            estimate = program.at(theta, xi0)
    if simulation_only:
        # EBEs: the conditional means from the chains; the IS proposal their covariances
        xi_hat, conditional = output.conditional_mean, output.conditional_covariance
        inner_converged = jnp.all(jnp.isfinite(xi_hat), axis=1)
        curvature = jnp.linalg.inv(conditional + 1e-12 * jnp.eye(model.n_random))
        ofv = float("nan")
    else:
        # the EBEs, their convergence and the OFV at θ̂, as the FOCE-I program left them
        xi_hat, inner_converged, ofv = estimate.xi, estimate.inner_converged, float(estimate.ofv)
    ofv_is = float("nan")
    if importance_samples > 0:
        if not simulation_only:
            curvature = _curvatures(model, stacked, theta, z, xi_hat)
        ofv_is = float(
            jnp.sum(
                _importance_sampling(
                    model, stacked, theta, z, xi_hat, curvature, key_sampling, importance_samples
                )
            )
        )
    if covariance == "none":
        cov = np.full((len(theta), len(theta)), np.nan)
    elif covariance == "stochastic":
        if method == "saem":
            chains, scales = output.chains, output.scales
        else:  # chains start at the EBEs
            chains, scales = chains_at(model, theta, z, xi_hat, settings.chains)
        information, scores = stochastic_information(
            model, stacked, z, theta, chains, scales, key_information, settings
        )
        cov = _covariance(np.asarray(information), np.asarray(scores), "hessian")
    elif covariance == "expected":
        information = _expected_information(model, stacked, theta, z, xi_hat)
        cov = _covariance(np.asarray(information), np.zeros((1, len(theta))), "hessian")
    else:
        hessian, scores = _curvature(program, estimate)
        cov = _covariance(np.asarray(hessian), np.asarray(scores), covariance)

    units = dict(units or {})
    tables = _tables(model, stacked, subjects, theta, xi_hat, z, cov, units)
    return PopulationResult(
        model=model,
        method=method,
        subjects=subjects,
        excluded=excluded,
        theta=np.asarray(theta),
        ofv=ofv,
        ofv_importance_sampling=ofv_is,
        n_observations=_n_observations(stacked),
        covariance=cov,
        covariance_method=covariance,
        converged=bool(converged),
        iterations=int(steps),
        inner_converged=np.asarray(inner_converged),
        seconds_compile=seconds_compile,
        seconds_total=time.perf_counter() - t_start,
        eta=np.asarray(jax.vmap(lambda x: model.unpack(theta)[2] @ x)(xi_hat)),
        trace=trace,
        start_ofvs=tuple(start_ofvs),
        **tables,
    )


def _perturbed_starts(model, first, theta0, starts, spread, seed) -> list[jnp.ndarray]:
    """θ₀, then `starts` − 1 perturbations of it: log-scale typical values and log ω moved
    by N(0, spread²), other typical values by spread·max(|μ|, 1)·N(0, 1); covariate effects
    and Ω's off-diagonal entries kept."""
    rng = np.random.default_rng([seed, 1])
    p, c, r = len(model.names), len(model.covariates), model.n_random
    log_scale = np.asarray(first.log_scale(), dtype=bool)
    base = np.asarray(theta0)
    out = [theta0]
    for _ in range(starts - 1):
        theta = base.copy()
        noise = rng.standard_normal(p)
        theta[:p] += spread * np.where(log_scale, 1.0, np.maximum(np.abs(base[:p]), 1.0)) * noise
        theta[p + c : p + c + r] += spread * rng.standard_normal(r)
        out.append(jnp.asarray(theta))
    return out


def prepare(problems, model, subjects, covariates, start, omega_start):
    """What every population method starts from: (the problems stacked, the subjects' names,
    subject 0's problem, the design z [n, c], θ₀), the inputs checked."""
    stacked = problems if isinstance(problems, AbstractFitProblem) else stack_problems(problems)
    n = int(jax.tree.leaves(stacked)[0].shape[0])
    subjects = tuple(str(s) for s in (subjects if subjects is not None else range(n)))
    if len(subjects) != n:
        raise ValueError(f"{len(subjects)} subject names for {n} problems")
    first = _take(stacked, 0)
    if tuple(first.names) != tuple(model.names):
        raise ValueError(
            f"the population model's quantities {model.names} are not the problems' "
            f"{tuple(first.names)}"
        )
    z = jnp.asarray(model.design(covariates if covariates is not None else {}, subjects))
    return stacked, subjects, first, z, _start(model, stacked, first, start, omega_start)


def _start(model, stacked, first, start, omega_start) -> jnp.ndarray:
    initial = np.asarray(jax.vmap(lambda p: p.initial())(stacked))
    mu = np.median(initial, axis=0)
    if start:
        unknown = set(start) - set(model.names)
        if unknown:
            raise ValueError(f"start: {sorted(unknown)} are not among {', '.join(model.names)}")
        values = np.array(first.to_values(jnp.asarray(mu)))
        for k, name in enumerate(model.names):
            if name in start:
                values[k] = start[name]
        mu = np.asarray(first.from_values(jnp.asarray(values)))
    if isinstance(omega_start, Mapping):
        sd = [float(omega_start.get(n, OMEGA_START)) for n in model.random]
    else:
        sd = [float(omega_start)] * model.n_random
    return model.pack(mu, np.zeros(len(model.covariates)), sd)


def _n_observations(stacked) -> int:
    """Observations of the stacked cohort (padding excluded): BIC's n."""
    mask = getattr(stacked, "mask", None)
    if mask is not None:
        return int(np.sum(np.asarray(mask)))
    experiments = getattr(stacked, "experiments", None)
    if experiments is not None:  # the coupled model's FitProblem: each experiment's mask
        return int(sum(np.sum(np.asarray(e.mask)) for e in experiments))
    return int(np.prod(jax.vmap(lambda p: p.residuals(p.initial()))(stacked).shape))


def _derived(model: PopulationModel, first: AbstractFitProblem, theta):
    """What the tables report, as one vector of θ: typical values (physical), covariate
    coefficients, random-effect SDs, then (full Ω) their correlations."""
    mu, beta, chol = model.unpack(theta)
    omega = chol @ chol.T
    sd = jnp.sqrt(jnp.diag(omega))
    parts = [first.to_values(mu), beta, sd]
    if model.omega == "full":
        rows, cols = np.tril_indices(model.n_random, -1)
        parts.append((omega / jnp.outer(sd, sd))[rows, cols])
    return jnp.concatenate(parts)


@eqx.filter_jit
def _derived_and_jacobian(model, first, theta):
    return _derived(model, first, theta), jax.jacfwd(lambda t: _derived(model, first, t))(theta)


def _tables(model, stacked, subjects, theta, xi, z, cov, units) -> dict[str, Any]:
    first = _take(stacked, 0)
    derived, jac = (np.asarray(a) for a in _derived_and_jacobian(model, first, theta))
    se = _propagate(jac, cov)
    p, c, r = len(model.names), len(model.covariates), model.n_random
    log_scale = first.log_scale()
    mu_se = np.sqrt(np.maximum(np.diag(cov)[:p], 0.0))  # NaN stays NaN
    mu = np.asarray(theta[:p])
    low = np.asarray(first.to_values(jnp.asarray(mu - Z95 * mu_se)))
    high = np.asarray(first.to_values(jnp.asarray(mu + Z95 * mu_se)))
    rows = [
        (name, derived[k], se[k], low[k], high[k], units.get(name, ""))
        for k, name in enumerate(model.names)
    ]
    for k, effect in enumerate(model.covariates):
        b, s = derived[p + k], se[p + k]
        rows.append((effect.name, b, s, b - Z95 * s, b + Z95 * s, ""))
    population = pd.DataFrame(
        rows, columns=["parameter", "estimate", "se", "ci_low", "ci_high", "unit"]
    )
    population.insert(3, "rse_percent", 100.0 * population["se"] / population["estimate"].abs())

    sd, sd_se = derived[p + c : p + c + r], se[p + c : p + c + r]
    chol = np.asarray(model.unpack(theta)[2])
    eta = np.asarray(xi) @ chol.T
    shrinkage = 1.0 - np.std(eta, axis=0, ddof=1) / sd if len(eta) > 1 else np.full(r, np.nan)
    random_log = [log_scale[model.names.index(n)] for n in model.random]
    cv = np.where(random_log, 100.0 * np.sqrt(np.expm1(sd**2)), np.nan)
    random_effects = pd.DataFrame(
        dict(
            parameter=list(model.random),
            omega_sd=sd,
            se=sd_se,
            rse_percent=100.0 * sd_se / sd,
            cv_percent=cv,
            shrinkage_percent=100.0 * shrinkage,
        )
    )
    omega_matrix = chol @ chol.T
    corr = omega_matrix / np.outer(np.sqrt(np.diag(omega_matrix)), np.sqrt(np.diag(omega_matrix)))
    omega = pd.DataFrame(corr, index=list(model.random), columns=list(model.random))
    omega.index.name = "parameter"

    u = jax.vmap(lambda zi, x: model.individual(theta, zi, x))(z, xi)
    values = np.asarray(jax.vmap(lambda prob, ui: prob.to_values(ui))(stacked, u))
    p_all = len(model.names)
    individual = pd.DataFrame(
        dict(
            subject=np.repeat(np.asarray(subjects, dtype=object), p_all),
            parameter=np.tile(np.asarray(model.names, dtype=object), len(subjects)),
            ebe=values.reshape(-1),
            unit=np.tile(
                np.asarray([units.get(n, "") for n in model.names], object), len(subjects)
            ),
        )
    )
    return dict(
        population_parameters=population,
        random_effects=random_effects,
        omega=omega,
        individual_parameters=individual,
        predictions=_predictions(model, stacked, subjects, theta, z, xi),
    )


@_cpu_compiled
@eqx.filter_jit
def _prediction_columns(model, stacked, theta, z, xi):
    """pred, ipred, IWRES and CWRES of every subject (vmapped; compiled once per shapes)."""

    def one(problem, zi, x):
        def at(e):  # (y − f)/σ at η (σ held), and f
            u = model.individual(theta, zi, e)
            preds, ok = problem.predictions(u)
            residual = problem.residuals_from(u, preds, ok)
            return residual, (residual, preds)

        # the residuals' Jacobian, with the residuals and ipred from the same solve
        jac, (residual, ipred) = jax.jacfwd(at, has_aux=True)(x)
        pred, _ = problem.predictions(model.individual(theta, zi, jnp.zeros_like(x)))
        # in η: J_η = J_ξ L⁻¹; Cov(r) = J_η Ω J_ηᵀ + I = J_ξ J_ξᵀ + I
        m = jac @ jac.T + jnp.eye(residual.shape[0])
        cwres = jax.scipy.linalg.solve_triangular(
            jnp.linalg.cholesky(m), residual - jac @ x, lower=True
        )
        return pred, ipred, residual, cwres

    return jax.vmap(one)(stacked, z, xi)


def _predictions(model, stacked, subjects, theta, z, xi) -> pd.DataFrame | None:
    """pred (η = 0), ipred (η̂), IWRES and CWRES (FOCE linearisation at η̂) per observation;
    for problems that carry their observations as `times`, `observed`, `mask`."""
    if not all(hasattr(stacked, a) for a in ("times", "observed", "mask")):
        return None

    pred, ipred, iwres, cwres = (
        np.asarray(a) for a in _prediction_columns(model, stacked, theta, z, xi)
    )
    times, observed, mask = (np.asarray(getattr(stacked, a)) for a in ("times", "observed", "mask"))
    rows, _ = np.nonzero(mask)  # subject by subject, each in time order
    return pd.DataFrame(
        dict(
            subject=np.asarray(subjects, dtype=object)[rows],
            time=times[mask],
            observable=_observable(stacked),
            dv=observed[mask],
            pred=pred[mask],
            ipred=ipred[mask],
            iwres=iwres[mask],
            cwres=cwres[mask],
        )
    )


def _observable(stacked) -> str:
    """The observable of a one-observable problem (`AbstractLogScaleProblem.observable`)."""
    return getattr(type(stacked), "observable", "concentration")
