"""The batch runner: every subject of a `SubjectBatch` fitted by one compiled round program.

A vmapped optimiser runs every lane as long as its slowest subject. So the runner keeps a pool
of `width` lanes and iterates in *rounds* of `round_steps` Levenberg–Marquardt iterations: after
each round, finished subjects (converged, out of iterations, or failed) leave their lane and the
next queued subjects take it. Converged subjects stop costing, and the program's shape never
changes (one compilation). Each subject's iterations are counted from its own start and its
optimiser restarts at the same points (every `round_steps` of its own iterations), so its
result does not depend on which lane or which neighbours it had — a resumed or re-sharded job
gives the same numbers.

The program is called on the busy lanes `chunk` at a time (`lanes_per_call`): on an
accelerator all lanes in one vmapped call, on CPU one lane per call (traced without `vmap`).
The lane axis is sharded over the given devices (`jax.sharding.Mesh` + `NamedSharding`), so one
program runs on all local devices (GPUs, or host devices).

Uncertainty is computed in the same program at the end of each round: the Gauss–Newton Fisher
information J^T J of the weighted residuals (the forward-mode Jacobian the optimiser used:
Rodas4's staggered sensitivities unless the solver says exact), its
eigen-decomposition (unresolved directions → infinite SE), SEs in optimisation coordinates,
95 % intervals mapped through each parameter's transform, and natural-scale SEs by the delta
method — as `mgjax.fit.laplace` does for one subject.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pandas as pd
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..fit._laplace import laplace_core
from ..fit._objective import FitProblem
from ..fit._optimise import (
    ATOL,
    DECREMENT_TOLERANCE,
    MAX_STEPS,
    RTOL,
    LevenbergMarquardt,
    accepted_aux,
    accepted_point,
    decrement_converged,
    jacobian_residuals,
    residual_structs,
    with_first_step_size,
)
from ._build import SubjectBatch

#: Standard-normal quantile of the χ² goodness-of-fit test that sends a fit to another start
#: (0.999 one-sided).
CHI2_Z = 3.09


@dataclass(frozen=True)
class BatchSettings:
    """How to run a batch.

    - `width`: lanes of the pool (subjects in flight at once; bounds memory); a multiple of
      the number of devices;
    - `round_steps`: optimiser iterations per round, between refills of finished lanes;
    - `max_steps`: iteration budget per start of a subject;
    - `rtol`, `atol`: Levenberg–Marquardt termination (step and cost change);
    - `decrement`: also stop when a full Gauss–Newton step would lower the least-squares
      objective ½‖r‖² by less than this (`mgjax.fit._optimise.DECREMENT_TOLERANCE`);
    - `restarts`: further starts for a subject whose fit ends implausibly (`implausible_fit`:
      χ² above its 99.9 % quantile); each gets `max_steps`, the lowest negative
      log-likelihood is kept;
    - `restart_step`: each restart's first trust-region step is this times the one before
      (its damping 1/`restart_step` times larger; `restart_point`);
    - `devices`: devices to shard the lanes over (default all local devices);
    - `chunk`: lanes per call of the compiled round (`lanes_per_call`; default one per
      device on CPU, `width` on accelerators). The program is compiled for `chunk` lanes
      whatever the cohort's size, so every cohort, shard and resumed job reuses it; each
      round runs only the chunks that hold unfinished subjects, so a slow subject at the
      tail costs its chunk, not the whole pool.

    The optimiser settings build `optimiser`, a `mgjax.fit.LevenbergMarquardt`.
    """

    width: int = 64
    round_steps: int = 4
    max_steps: int = MAX_STEPS
    rtol: float = RTOL
    atol: float = ATOL
    decrement: float = DECREMENT_TOLERANCE
    restarts: int = 1
    restart_step: float = 0.01
    devices: tuple[Any, ...] | None = None
    chunk: int | None = None

    @property
    def optimiser(self) -> LevenbergMarquardt:
        """The Levenberg–Marquardt optimiser of every subject."""
        return LevenbergMarquardt(
            max_steps=self.max_steps, rtol=self.rtol, atol=self.atol, decrement=self.decrement
        )


#: Optimistix options of the Levenberg–Marquardt solver
LM_OPTIONS = LevenbergMarquardt.options


def _residual_function(problem):
    """The residual function of `problem` for Optimistix: (u, warm) ↦ (r, (negative
    log-likelihood, solve succeeded, start)), one forward-mode solve for r, its Jacobian and
    the likelihood; `warm` (Optimistix's `args`) is the `start` of the last accepted iterate
    (its fasting steady state: the next point's search starts there)."""
    return jacobian_residuals(problem)


def _lm_state(problem, u, solver: optx.LevenbergMarquardt, structs):
    """(arrays, the rest) of the solver's initial state at `u`; `structs`: the residual
    function's output shapes (`residual_structs`)."""
    fn, options = _residual_function(problem), dict(LM_OPTIONS)
    f_struct, aux_struct = structs
    # probed with a start of the shape the iterations pass (zeros: no start), so that the
    # probe's trace of the forward-mode Jacobian is the one the iterations reuse
    no_start = jnp.zeros(aux_struct[2].shape, aux_struct[2].dtype)
    state = solver.init(fn, u, no_start, options, f_struct, aux_struct, frozenset())
    return eqx.partition(state, eqx.is_array)


def _subject_round(
    problem,
    u,
    carried,
    fresh,
    budget,
    first_step,
    round_steps: int,
    solver: optx.LevenbergMarquardt,
    decrement: float,
    structs,
):
    """Up to `round_steps` (and at most `budget`) iterations of the Levenberg–Marquardt
    `solver` on one subject from `u`, continuing the optimiser state `carried` (its arrays)
    unless `fresh` (then its trust region starts at `first_step`: the damping of the first step
    is 1/first_step), stopping also at a Gauss–Newton decrement below `decrement`; then the
    goodness of fit and the uncertainty at the end. `structs`: the residual function's
    output shapes (`residual_structs`, traced once per program)."""
    fn, options = _residual_function(problem), dict(LM_OPTIONS)
    dynamic0, static = _lm_state(problem, u, solver, structs)
    dynamic0 = with_first_step_size(dynamic0, first_step)
    dynamic = jax.tree.map(lambda a, b: jnp.where(fresh, a, b), dynamic0, carried)
    tags = frozenset()

    def cond(carry):
        i, _, _, done = carry
        return (i < jnp.minimum(round_steps, budget)) & ~done

    def body(carry):
        i, y, dyn, _ = carry
        state = eqx.combine(dyn, static)
        # the steady state of the last accepted iterate (zeros in a fresh state: no start)
        warm = accepted_aux(state)[2]
        y, state, _ = solver.step(fn, y, warm, options, state, tags)
        done, result = solver.terminate(fn, y, warm, options, state, tags)
        done = (done | decrement_converged(state, decrement)) & (result == optx.RESULTS.successful)
        return i + 1, y, eqx.filter(state, eqx.is_array), done

    i, u, dynamic, done = jax.lax.while_loop(
        cond, body, (jnp.asarray(0), u, dynamic, jnp.asarray(False))
    )
    # the likelihood and the Jacobian at the last accepted iterate, as the optimiser
    # stored them (no further solve)
    point = accepted_point(eqx.combine(dynamic, static))
    loss, ok, _ = point.aux
    chi2 = problem.data_chi2(point.residual)
    core = laplace_core(problem, u, problem.fisher_from(point.residual, point.jacobian))
    return dict(
        u=u,
        state=dynamic,
        loss=loss,
        chi2=chi2,
        iterations=i,
        converged=done & ok,
        solve_success=ok,
        estimate=core.values,
        se=core.se,
        se_relative=core.se_relative,
        ci_low=core.ci_low,
        ci_high=core.ci_high,
    )


@contextlib.contextmanager
def errors_as_nan():
    """Trace with Equinox's runtime checks (`eqx.error_if`) returning NaN instead of raising.

    Diffrax's `diffeqsolve` validates its inputs with `eqx.error_if` (t0/t1/dt0 signs, saveat
    times increasing and inside [t0, t1]) whatever `throw` says; in Equinox's default "raise"
    mode each check is a host callback in the traced program. A program with host callbacks
    cannot be exported and stored (`mgjax.runtime._programs`: every later run would trace and
    compile again), and in a batch one subject's failed check would raise for all (with NaN it
    reaches that subject's flags). Equinox's only public switch is the `EQX_ON_ERROR`
    environment variable, read once when Equinox is imported; setting it would change every
    user's programs. So this is the one place that sets Equinox's private module setting
    (`equinox._errors.EQX_ON_ERROR`, read by `error_if` when it traces) for the traces of the
    stored programs; tests/test_fit_interfaces.py pins that it removes the callbacks. Safe in
    threads (the report's program is traced beside the fit's): the setting is restored when
    the last of the overlapping traces ends."""
    import equinox._errors as errors

    global _NAN_DEPTH, _NAN_PREVIOUS
    with _NAN_LOCK:
        if _NAN_DEPTH == 0:
            _NAN_PREVIOUS = errors.EQX_ON_ERROR
            errors.EQX_ON_ERROR = "nan"
        _NAN_DEPTH += 1
    try:
        yield
    finally:
        with _NAN_LOCK:
            _NAN_DEPTH -= 1
            if _NAN_DEPTH == 0:
                errors.EQX_ON_ERROR = _NAN_PREVIOUS


_NAN_LOCK = threading.Lock()
_NAN_DEPTH = 0
_NAN_PREVIOUS = "raise"


class _LaneShapes:
    """One lane's shapes, traced at most once per round program and only when needed (a
    stored program needs only the optimiser state's leaf shapes, stored beside it): the
    residual function's outputs and the optimiser state's arrays. Each trace of the
    residual function (a forward-mode solve) costs a fraction of a second; the round's
    trace would otherwise repeat them."""

    def __init__(self, one: FitProblem, solver: optx.LevenbergMarquardt):
        self.one, self.solver = one, solver
        self._outputs = self._state = None

    def outputs(self):
        if self._outputs is None:
            self._outputs = residual_structs(self.one, self.one.initial())
        return self._outputs

    def state(self):
        """The optimiser state's arrays (a pytree of shape-dtype structs)."""
        if self._state is None:
            self._state = eqx.filter_eval_shape(
                lambda p, u: _lm_state(p, u, self.solver, self.outputs())[0],
                self.one,
                self.one.initial(),
            )
        return self._state

    def leaves(self) -> list[tuple[tuple[int, ...], str]]:
        """Shapes and dtypes of the optimiser state's arrays (flattened)."""
        return [(tuple(s.shape), str(s.dtype)) for s in jax.tree.leaves(self.state())]


def round_program(batch: SubjectBatch, width: int, settings: BatchSettings, sharding):
    """The compiled round of `width` lanes for `batch`'s structure, on flat inputs
    (problem leaves, u, optimiser-state leaves, fresh) → (outputs, new state leaves); stored
    and reused by later runs (`mgjax.runtime._programs`). Returns (program, state template)."""
    from ..runtime._programs import (
        CompiledProgram,
        compile_program,
        cpu_compiler_options,
        stored_json,
    )

    one = batch.one(0)
    one_leaves, one_tree = jax.tree.flatten(one)
    static = (str(one_tree), [np.shape(x) for x in one_leaves], settings.rtol, settings.atol)
    # built outside the trace: Optimistix checks its trust region's constants (`eqx.error_if`)
    # once, eagerly, rather than in every lane of the program
    solver, decrement = settings.optimiser.solver(), settings.decrement
    lane = _LaneShapes(one, solver)
    t0 = time.perf_counter()
    with errors_as_nan():  # any trace in raise mode would be reused by the program's trace
        shapes = stored_json("lm-state", static, lane.leaves)
    probing = time.perf_counter() - t0  # traces the Jacobian once unless stored: compile time
    carried = [np.zeros((width, *shape), dtype) for shape, dtype in shapes]
    rs = settings.round_steps

    def flat_round(problem_leaves, u, state_leaves, fresh, budget, first_step):
        problems = jax.tree.unflatten(one_tree, problem_leaves)
        state = jax.tree.unflatten(jax.tree.structure(lane.state()), state_leaves)
        structs = lane.outputs()

        def one_lane(p, y, c, f, b, s):
            return _subject_round(p, y, c, f, b, s, rs, solver, decrement, structs)

        inputs = (problems, u, state, fresh, budget, first_step)
        if width == 1:  # one lane: no batching transform (a smaller, faster-compiling trace)
            single = jax.tree.map(lambda x: x[0], inputs)
            out = jax.tree.map(lambda x: x[None], one_lane(*single))
        else:
            out = jax.vmap(one_lane)(*inputs)
        new_state = out.pop("state")
        return out, jax.tree.leaves(new_state)

    problem_leaves = [np.asarray(x) for x in jax.tree.leaves(batch.take(np.zeros(width, int)))]
    example = (
        problem_leaves,
        np.zeros((width, len(batch.problems.names)), np.float64),
        carried,
        np.ones(width, bool),
        np.zeros(width, np.int64),
        np.ones(width, np.float64),
    )
    with errors_as_nan():
        program = compile_program(
            "batch-round",
            flat_round,
            example,
            # the problems' structure (free names, error models, static fields) shapes the
            # trace although only their leaves are arguments
            static=(
                str(one_tree),
                rs,
                settings.rtol,
                settings.atol,
                settings.decrement,
                str(sharding),
            ),
            in_shardings=sharding,
            compiler_options=cpu_compiler_options(sharding.mesh.devices.flat[0].platform),
        )
    return CompiledProgram(program.call, program.source, program.seconds + probing), carried


@eqx.filter_jit
def _initial(problems):
    return jax.vmap(lambda p: p.initial())(problems)


def _on_lanes(arrays: Any, sharding: NamedSharding) -> Any:
    """Host arrays as the round program's inputs: on one device as they are (the compiled
    program copies them in its own call: preparing the inputs of a 100-subject fit took 2.0 s
    with `jax.device_put`, now 0.2 s), on several devices placed on the lanes' shards."""
    if len(sharding.device_set) == 1:
        return arrays
    return jax.device_put(arrays, sharding)


def lane_sharding(devices: Sequence[Any]) -> NamedSharding:
    """Sharding of a leading subject (lane) axis over `devices`."""
    return NamedSharding(Mesh(np.asarray(devices), ("subjects",)), P("subjects"))


def status_of(converged: np.ndarray, solve_success: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """Why a subject's fit ended: converged, solve_failed (the model could not be solved at
    its parameters), nonfinite_loss, or max_steps (iteration budget spent)."""
    return np.where(
        ~solve_success,
        "solve_failed",
        np.where(~finite, "nonfinite_loss", np.where(converged, "converged", "max_steps")),
    )


def chi2_limit(dof: jax.typing.ArrayLike, z: float = CHI2_Z) -> np.ndarray | np.floating:
    """Upper quantile (`z` standard deviations) of the χ² distribution with `dof` degrees of
    freedom (Wilson–Hilferty: (χ²/k)^(1/3) is nearly normal, mean 1 − 2/(9k), variance
    2/(9k); within 2 % of the exact quantile, 0.2 % from 30 degrees of freedom)."""
    k = np.maximum(np.asarray(dof, dtype=float), 1.0)
    return k * (1.0 - 2.0 / (9.0 * k) + z * np.sqrt(2.0 / (9.0 * k))) ** 3


def implausible_fit(
    chi2: jax.typing.ArrayLike, n_observations: jax.typing.ArrayLike, n_free: int
) -> np.ndarray | np.bool_:
    """Fits worth another start: the data's χ² above its 99.9 % quantile for observations −
    free quantities degrees of freedom (or not finite). On the benchmark cohort such a fit is
    far more often a spurious optimum than a subject with unlucky noise, whether or not
    Levenberg–Marquardt flagged it converged; fits that crawl to the iteration budget with a
    plausible χ² or end at a range's bound with one are not helped by another start."""
    dof = np.asarray(n_observations) - n_free
    return ~(np.asarray(chi2) <= chi2_limit(dof))  # NaN counts as a misfit


def observation_counts(batch: SubjectBatch) -> np.ndarray:
    """Observations per subject of `batch` (padding excluded)."""
    n = np.zeros(len(batch), dtype=int)
    for e in batch.problems.experiments:
        n += np.asarray(e.mask).reshape(len(batch), -1).sum(axis=1)
    return n


def lower_loss(loss: float, other: float) -> bool:
    """Whether `loss` is lower than `other`, a non-finite loss counting as +∞."""
    return (loss if np.isfinite(loss) else np.inf) < (other if np.isfinite(other) else np.inf)


def restart_point(initial: np.ndarray, start: int, settings: BatchSettings):
    """(u, first trust-region step) of a subject's start number `start` (0 = the first):
    every start from its base values, each restart with 1/`settings.restart_step` times the
    damping of the start before (small first steps keep Levenberg–Marquardt in the start's
    basin, where a full Gauss–Newton step can jump out of it)."""
    return initial, settings.restart_step**start


def _devices(settings: BatchSettings) -> tuple[Any, ...]:
    """The devices of the lanes; `settings.width` must be a multiple of their number."""
    devices = tuple(settings.devices or jax.local_devices())
    if settings.width % len(devices):
        raise ValueError(
            f"width {settings.width} is not a multiple of the {len(devices)} devices; "
            f"use a multiple of {len(devices)}"
        )
    return devices


#: Lanes per device in one call of the round program on CPU: one, and then the program is
#: traced without `vmap`. XLA:CPU gains nothing from wide programs on this model (a round of
#: 32 lanes costs the same in calls of 1 or 8 lanes), while a one-lane call runs only its own
#: subject's iterations (a vmapped while-loop runs as long as its slowest lane), costs 8× less
#: than an 8-lane call at a cohort's tail, and compiles faster (measured in docs/batch.md,
#: "One program for any cohort").
CPU_LANES_PER_DEVICE = 1


def in_chunks(items: np.ndarray, chunk: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`items` in calls of a program compiled for `chunk` of them: (items, padded) per call,
    `padded` the call's `chunk` entries, the last call filled up by repeating its first item
    (whose results the caller ignores)."""
    out = []
    for k in range(0, len(items), chunk):
        part = items[k : k + chunk]
        out.append((part, np.concatenate([part, np.full(chunk - len(part), part[0])])))
    return out


def lanes_per_call(settings: BatchSettings, devices: Sequence[Any]) -> int:
    """Lanes of one call of the compiled round: `settings.chunk`, else on CPU
    `CPU_LANES_PER_DEVICE` (one) per device, and `settings.width` on accelerators (which want
    wide programs); never more than `settings.width`; a multiple of the devices. It depends
    on the settings only, never on the cohort."""
    n = len(devices)
    if settings.chunk is not None:
        chunk = settings.chunk
    elif devices[0].platform == "cpu":
        chunk = n * CPU_LANES_PER_DEVICE
    else:
        chunk = settings.width
    chunk = min(chunk, settings.width)
    if chunk < 1 or chunk % n:
        raise ValueError(
            f"chunk {chunk} is not a positive multiple of the {n} devices; use a multiple of {n}"
        )
    return chunk


class _LanePool:
    """The host side of the lane pool: which subject and start each lane holds (-1: idle), its
    point, iterations spent, whether its optimiser starts afresh, its first trust-region step
    and its loss trace [(iterations, loss)] at the end of each round."""

    def __init__(self, width: int, initial: np.ndarray):
        self.initial = initial
        self.lanes = np.full(width, -1)
        self.starts = np.zeros(width, dtype=int)
        self.u = np.zeros((width, initial.shape[1]))
        self.spent = np.zeros(width, dtype=int)
        self.fresh = np.zeros(width, dtype=bool)
        self.first_step = np.ones(width)
        self.traces: list[list[tuple[int, float]]] = [[] for _ in range(width)]

    def busy(self) -> bool:
        return bool((self.lanes >= 0).any())

    def fill(self, queue: list[tuple[int, int]], settings: BatchSettings) -> None:
        """Idle lanes take the next (subject, start) of `queue` (from its end)."""
        for lane in np.flatnonzero(self.lanes < 0):
            if not queue:
                break
            i, k = queue.pop()
            self.lanes[lane], self.starts[lane], self.spent[lane] = i, k, 0
            self.fresh[lane] = True
            self.u[lane], self.first_step[lane] = restart_point(self.initial[i], k, settings)
            self.traces[lane] = []

    def chunks(self, chunk: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The busy lanes in calls of `chunk` lanes (`in_chunks`)."""
        return in_chunks(np.flatnonzero(self.lanes >= 0), chunk)

    def inputs(
        self, batch: SubjectBatch, settings: BatchSettings, padded: np.ndarray, n: int, sharding
    ) -> tuple:
        """The round program's inputs for the lanes `padded`, of which the first `n` are
        busy and the rest filling, on the lanes' devices (a filling lane starts its subject
        afresh with a budget of one iteration; its results are ignored)."""
        filling = np.arange(len(padded)) >= n
        index = self.lanes[padded]
        u_in = np.where(filling[:, None], self.initial[index], self.u[padded])
        budget = np.where(filling, 1, settings.max_steps - self.spent[padded]).astype(np.int64)
        return _on_lanes(
            (
                jax.tree.leaves(batch.take(index)),
                u_in,
                self.fresh[padded] | filling,
                budget,
                np.where(filling, 1.0, self.first_step[padded]),
            ),
            sharding,
        )

    def advance(self, out: dict, settings: BatchSettings) -> np.ndarray:
        """Take a round's outputs; return the lanes whose start finished (converged, solve
        failed, non-finite loss, or iteration budget spent)."""
        active = self.lanes >= 0
        self.fresh[:] = False
        self.spent = self.spent + np.where(active, out["iterations"], 0)
        finite = np.isfinite(out["loss"])
        for lane in np.flatnonzero(active):
            self.traces[lane].append((int(self.spent[lane]), float(out["loss"][lane])))
        self.u = np.where(active[:, None], out["u"], self.u)
        return active & (
            out["converged"] | ~out["solve_success"] | ~finite | (self.spent >= settings.max_steps)
        )


def _start_row(batch: SubjectBatch, i: int, r: int, out: dict, status, n_observations) -> dict:
    """The wide row of subject `i`'s start that ended in lane `r`."""
    row = dict(
        subject=batch.subjects[i],
        group=batch.groups[i],
        loss=float(out["loss"][r]),
        converged=bool(out["converged"][r]),
        status=str(status[r]),
        chi2=float(out["chi2"][r]),
        n_observations=int(n_observations[i]),
    )
    for key in ("estimate", "se", "se_relative", "ci_low", "ci_high"):
        for k, name in enumerate(batch.problems.names):
            row[f"{key}[{name}]"] = float(out[key][r, k])
    return row


def _with_earlier(row: dict, earlier: dict | None, pool: _LanePool, r: int) -> dict:
    """This start after the subject's earlier ones (`earlier`: the best so far): iterations
    and the loss trace counted over all starts, the lowest negative log-likelihood kept."""
    used = earlier["iterations"] if earlier else 0
    trace = (earlier["trace"] if earlier else []) + [(used + n, x) for n, x in pool.traces[r]]
    if earlier is not None and not lower_loss(row["loss"], earlier["loss"]):
        row = earlier
    row.update(iterations=used + int(pool.spent[r]), trace=trace, starts=int(pool.starts[r]) + 1)
    return row


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Finished subjects' rows as a frame, the loss trace as JSON."""
    frame = pd.DataFrame(rows)
    frame["loss_trace"] = [json.dumps(t) for t in frame.pop("trace")]
    return frame


def _gather(calls, width: int, carried: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The round's outputs of all calls on the pool's `width` lanes (zeros for idle lanes),
    each call's new optimiser state written into `carried`."""
    out: dict[str, np.ndarray] = {}
    for lanes, (values, state) in calls:
        n = len(lanes)
        for key, value in values.items():
            value = np.asarray(value)
            if key not in out:
                out[key] = np.zeros((width, *value.shape[1:]), value.dtype)
            out[key][lanes] = value[:n]
        for target, value in zip(carried, state):
            target[lanes] = np.asarray(value)[:n]
    return out


def run_batch(
    batch: SubjectBatch,
    settings: BatchSettings = BatchSettings(),
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    on_finished: Callable[[pd.DataFrame], None] | None = None,
    on_round: Callable[[int, int], None] | None = None,
    on_compiled: Callable[[Any], None] | None = None,
    claim: Callable[[int], Sequence[int]] | None = None,
    share: int | None = None,
) -> pd.DataFrame:
    """Fit every subject of `batch` not in `skip` — or, with `claim`, those that `claim(k)`
    hands out (up to k more subject indices of the batch, asked for whenever lanes would
    otherwise idle, never more than `share` at once; worker processes share the batch's
    subjects this way). Finished subjects are handed to `on_finished` after each round (a
    wide frame: subject, group, loss, converged, iterations (over all starts), status, starts,
    chi2, n_observations, loss_trace (JSON [[iterations, loss], …] at the end of each round),
    then `estimate[p]`, `se[p]`, `se_relative[p]`, `ci_low[p]`, `ci_high[p]` per free
    quantity); `on_round(finished so far, total)` reports progress; `on_compiled(program)`
    gets the compiled round (its `seconds` and `source`). A fit that ends implausibly
    (`implausible_fit`) is started again (at most `settings.restarts` times;
    `restart_point`) and the start with the lowest negative log-likelihood is kept. Returns
    all finished rows."""
    devices = _devices(settings)
    sharding = lane_sharding(devices)
    todo = [i for i, s in enumerate(batch.subjects) if s not in skip]
    # (subject, start number), taken from the end
    queue = [(i, 0) for i in reversed(todo)] if claim is None else []
    total = len(todo)
    held = total if claim is None or share is None else min(share, total)
    if total == 0:
        return pd.DataFrame()
    chunk = lanes_per_call(settings, devices)
    # fewer subjects than lanes: shrink the pool (the program keeps its `chunk` lanes)
    width = min(settings.width, -(-held // chunk) * chunk)
    pool = _LanePool(width, np.asarray(_initial(batch.problems)))
    n_observations = observation_counts(batch)
    n_free = len(batch.problems.names)
    program, template = round_program(batch, chunk, settings, sharding)
    if on_compiled is not None:
        on_compiled(program)
    carried = [np.zeros((width, *x.shape[1:]), x.dtype) for x in template]
    frames: list[pd.DataFrame] = []
    best: dict[int, dict] = {}  # a restarted subject's best start so far
    done = 0
    while True:
        if claim is not None:
            busy = int((pool.lanes >= 0).sum())
            room = min(width - busy, held - busy) - len(queue)
            if room > 0:
                queue[:0] = [(int(i), 0) for i in reversed(claim(room))]  # after restarts
        if not (queue or pool.busy()):
            break
        pool.fill(queue, settings)
        calls = []
        for lanes, padded in pool.chunks(chunk):  # all dispatched before any is read back
            problems, u, fresh, budget, first_step = pool.inputs(
                batch, settings, padded, len(lanes), sharding
            )
            state = _on_lanes([x[padded] for x in carried], sharding)
            calls.append((lanes, program(problems, u, state, fresh, budget, first_step)))
        out = _gather(calls, width, carried)
        finished = pool.advance(out, settings)
        status = status_of(out["converged"], out["solve_success"], np.isfinite(out["loss"]))
        rows = []
        for r in np.flatnonzero(finished).tolist():
            i = int(pool.lanes[r])
            row = _start_row(batch, i, r, out, status, n_observations)
            row = _with_earlier(row, best.pop(i, None), pool, r)
            retry = implausible_fit(row["chi2"], row["n_observations"], n_free)
            if retry and pool.starts[r] < settings.restarts:
                best[i] = row
                queue.append((i, int(pool.starts[r]) + 1))  # next in line
            else:
                rows.append(row)
        pool.lanes[finished] = -1
        if rows:
            frame = _frame(rows)
            frames.append(frame)
            if on_finished is not None:
                on_finished(frame)
            done += len(rows)
        if on_round is not None:
            on_round(done, total)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
