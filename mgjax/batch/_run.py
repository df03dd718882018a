"""The batch runner: every subject of a `SubjectBatch` fitted by one vmapped, jitted program.

A vmapped optimiser runs every lane as long as its slowest subject. So the runner keeps a pool
of `width` lanes and iterates in *rounds* of `round_steps` Levenberg–Marquardt iterations: after
each round, finished subjects (converged, out of iterations, or failed) leave their lane and the
next queued subjects take it. Converged subjects stop costing, and the program's shape never
changes (one compilation). Each subject's iterations are counted from its own start and its
optimiser restarts at the same points (every `round_steps` of its own iterations), so its
result does not depend on which lane or which neighbours it had — a resumed or re-sharded job
gives the same numbers.

The lane axis is sharded over the given devices (`jax.sharding.Mesh` + `NamedSharding`), so one
program runs on all local devices (GPUs, or host devices).

Uncertainty is computed in the same program at the end of each round: the Gauss–Newton Fisher
information J^T J of the weighted residuals (exact forward-mode Jacobian), its
eigen-decomposition (unresolved directions → infinite SE), SEs in optimisation coordinates,
95 % intervals mapped through each parameter's transform, and natural-scale SEs by the delta
method — as `mgjax.fit.laplace` does for one subject.
"""

from __future__ import annotations

import contextlib
import json
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

from ..fit._objective import FitProblem
from ..fit._optimise import DECREMENT_TOLERANCE, decrement_converged, jacobian_residuals
from ..fit._uncertainty import Z95
from ._build import SubjectBatch

#: Relative SE (of log θ for positive parameters) above which an estimate is flagged as not
#: identifiable (as `mgjax.fit.laplace`).
SLOPPY_SE = 0.5


@dataclass(frozen=True)
class BatchSettings:
    """How to run a batch.

    - `width`: lanes of the vmapped program (subjects in flight at once; bounds memory); a
      multiple of the number of devices;
    - `round_steps`: optimiser iterations per round, between refills of finished lanes;
    - `max_steps`: iteration budget per subject;
    - `rtol`, `atol`: Levenberg–Marquardt termination (step and cost change);
    - `decrement`: also stop when a full Gauss–Newton step would lower the least-squares
      objective ½‖r‖² by less than this (`mgjax.fit._optimise.DECREMENT_TOLERANCE`);
    - `devices`: devices to shard the lanes over (default all local devices).
    """

    width: int = 64
    round_steps: int = 8
    max_steps: int = 200
    rtol: float = 1e-8
    atol: float = 1e-8
    decrement: float = DECREMENT_TOLERANCE
    devices: tuple[Any, ...] | None = None


def _lm(problem, rtol: float, atol: float):
    """(solver, residual function, options) of the Levenberg–Marquardt fit of `problem`."""
    residuals = jacobian_residuals(problem, with_likelihood=True)

    def fn(u, args):
        return residuals(u)  # (r, (negative log-likelihood, solve succeeded))

    return optx.LevenbergMarquardt(rtol=rtol, atol=atol), fn, {"jac": "fwd"}


def _lm_state(problem, u, rtol, atol):
    solver, fn, options = _lm(problem, rtol, atol)
    f_struct, aux_struct = jax.eval_shape(lambda y: fn(y, None), u)
    state = solver.init(fn, u, None, options, f_struct, aux_struct, frozenset())
    return eqx.partition(state, eqx.is_array)


def _subject_round(
    problem,
    u,
    carried,
    fresh,
    budget,
    round_steps: int,
    rtol: float,
    atol: float,
    decrement: float,
):
    """Up to `round_steps` (and at most `budget`) Levenberg–Marquardt iterations of one subject
    from `u`, continuing the optimiser state `carried` (its arrays) unless `fresh`; then the
    uncertainty at the end."""
    solver, fn, options = _lm(problem, rtol, atol)
    dynamic0, static = _lm_state(problem, u, rtol, atol)
    dynamic = jax.tree.map(lambda a, b: jnp.where(fresh, a, b), dynamic0, carried)
    tags = frozenset()

    def cond(carry):
        i, _, _, done = carry
        return (i < jnp.minimum(round_steps, budget)) & ~done

    def body(carry):
        i, y, dyn, _ = carry
        state = eqx.combine(dyn, static)
        y, state, _ = solver.step(fn, y, None, options, state, tags)
        done, result = solver.terminate(fn, y, None, options, state, tags)
        done = (done | decrement_converged(state, decrement)) & (result == optx.RESULTS.successful)
        return i + 1, y, eqx.filter(state, eqx.is_array), done

    i, u, dynamic, done = jax.lax.while_loop(
        cond, body, (jnp.asarray(0), u, dynamic, jnp.asarray(False))
    )
    # the likelihood and the exact Jacobian at the last accepted iterate, as the optimiser
    # stored them (no further solve)
    state = eqx.combine(dynamic, static)
    loss, ok = state.aux
    jac = state.f_info.jac.as_matrix()
    fim = jac.T @ jac
    eigenvalues, eigenvectors = jnp.linalg.eigh(fim)
    floor = jnp.maximum(jnp.max(eigenvalues), 1e-300) * 1e-13
    resolved = eigenvalues > floor
    inverse = jnp.where(resolved, 1.0 / jnp.where(resolved, eigenvalues, 1.0), 0.0)
    covariance = (eigenvectors * inverse) @ eigenvectors.T
    se_u = jnp.sqrt(jnp.maximum(jnp.diag(covariance), 0.0))
    unresolved = jnp.any((jnp.abs(eigenvectors) > 1e-3) & ~resolved[None, :], axis=1)
    se_u = jnp.where(unresolved, jnp.inf, se_u)
    width = Z95 * jnp.where(jnp.isfinite(se_u), se_u, 50.0)
    low, high = problem.to_values(u - width), problem.to_values(u + width)
    values = problem.to_values(u)
    slopes = jnp.abs(jnp.diag(jax.jacfwd(problem.to_values)(u)))
    se = slopes * se_u
    log_scale = jnp.asarray(problem.log_scale())
    se_rel = jnp.where(log_scale, se / jnp.where(log_scale, jnp.abs(values), 1.0), se_u)
    return dict(
        u=u,
        state=dynamic,
        loss=loss,
        iterations=i,
        converged=done & ok,
        solve_success=ok,
        estimate=values,
        se=se,
        se_relative=se_rel,
        ci_low=jnp.minimum(low, high),
        ci_high=jnp.maximum(low, high),
    )


@contextlib.contextmanager
def errors_as_nan():
    """Trace with Equinox's runtime checks (`eqx.error_if`, used by Diffrax, Optimistix and
    Lineax) returning NaN instead of raising: in a batch, one subject's failure must not raise
    for all (the NaN reaches that subject's flags), and a program without the checks' host
    callbacks can be stored by JAX's persistent compilation cache, so a second run of a job
    does not compile again. Equinox reads this setting when it traces (`EQX_ON_ERROR`)."""
    import equinox._errors as errors

    previous = errors.EQX_ON_ERROR
    errors.EQX_ON_ERROR = "nan"
    try:
        yield
    finally:
        errors.EQX_ON_ERROR = previous


def _state_shapes(one: FitProblem, rtol: float, atol: float) -> list[tuple[tuple[int, ...], str]]:
    """Shapes and dtypes of one lane's optimiser-state arrays (flattened)."""
    shapes = eqx.filter_eval_shape(lambda p, u: _lm_state(p, u, rtol, atol)[0], one, one.initial())
    return [(tuple(s.shape), str(s.dtype)) for s in jax.tree.leaves(shapes)]


def round_program(batch: SubjectBatch, width: int, settings: BatchSettings, sharding):
    """The compiled round of `width` lanes for `batch`'s structure, on flat inputs
    (problem leaves, u, optimiser-state leaves, fresh) → (outputs, new state leaves); stored
    and reused by later runs (`mgjax._program_cache`). Returns (program, state template)."""
    from .._program_cache import compile_program, stored_json

    one = batch.one(0)
    one_leaves, one_tree = jax.tree.flatten(one)
    static = (str(one_tree), [np.shape(x) for x in one_leaves], settings.rtol, settings.atol)
    with errors_as_nan():  # any trace in raise mode would be reused by the program's trace
        shapes = stored_json(
            "lm-state", static, lambda: _state_shapes(one, settings.rtol, settings.atol)
        )
    carried = [np.zeros((width, *shape), dtype) for shape, dtype in shapes]
    rs, rtol, atol = settings.round_steps, settings.rtol, settings.atol
    decrement = settings.decrement

    def flat_round(problem_leaves, u, state_leaves, fresh, budget):
        problems = jax.tree.unflatten(one_tree, problem_leaves)
        first = jax.tree.map(lambda x: x[0], problems)
        state_tree = jax.tree.structure(
            eqx.filter_eval_shape(lambda p, y: _lm_state(p, y, rtol, atol)[0], first, u[0])
        )
        state = jax.tree.unflatten(state_tree, state_leaves)
        out = jax.vmap(
            lambda p, y, c, f, b: _subject_round(p, y, c, f, b, rs, rtol, atol, decrement)
        )(problems, u, state, fresh, budget)
        new_state = out.pop("state")
        return out, jax.tree.leaves(new_state)

    problem_leaves = [np.asarray(x) for x in jax.tree.leaves(batch.take(np.zeros(width, int)))]
    example = (
        problem_leaves,
        np.zeros((width, len(batch.problems.names)), np.float64),
        carried,
        np.ones(width, bool),
        np.zeros(width, np.int64),
    )
    with errors_as_nan():
        program = compile_program(
            "batch-round",
            flat_round,
            example,
            static=(rs, rtol, atol, decrement, str(sharding)),
            in_shardings=sharding,
        )
    return program, carried


@eqx.filter_jit
def _initial(problems):
    return jax.vmap(lambda p: p.initial())(problems)


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


def run_batch(
    batch: SubjectBatch,
    settings: BatchSettings = BatchSettings(),
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    on_finished: Callable[[pd.DataFrame], None] | None = None,
    on_round: Callable[[int, int], None] | None = None,
    on_compiled: Callable[[Any], None] | None = None,
) -> pd.DataFrame:
    """Fit every subject of `batch` not in `skip`. Finished subjects are handed to
    `on_finished` after each round (a wide frame: subject, group, loss, converged, iterations,
    status, loss_trace (JSON [[iterations, loss], …] at the end of each round), then
    `estimate[p]`, `se[p]`, `se_relative[p]`, `ci_low[p]`, `ci_high[p]` per free
    quantity); `on_round(finished_so_far, total)` reports progress; `on_compiled(program)` gets
    the compiled round (its `seconds` and `source`). Returns all finished rows."""
    devices = tuple(settings.devices or jax.local_devices())
    if settings.width % len(devices):
        raise ValueError(
            f"width {settings.width} is not a multiple of the {len(devices)} devices; "
            f"use a multiple of {len(devices)}"
        )
    sharding = lane_sharding(devices)
    names = batch.problems.names
    todo = [i for i, s in enumerate(batch.subjects) if s not in skip]
    queue = list(reversed(todo))
    total = len(todo)
    if total == 0:
        return pd.DataFrame()
    # fewer subjects than lanes: shrink to the subjects, rounded up to the devices
    width = min(settings.width, -(-total // len(devices)) * len(devices))
    initial = np.asarray(_initial(batch.problems))
    lanes = np.full(width, -1)
    u = np.zeros((width, initial.shape[1]))
    spent = np.zeros(width, dtype=int)
    fresh = np.zeros(width, dtype=bool)
    program, carried = round_program(batch, width, settings, sharding)
    if on_compiled is not None:
        on_compiled(program)
    frames: list[pd.DataFrame] = []
    traces: list[list[tuple[int, float]]] = [[] for _ in range(width)]  # (iterations, loss)
    done = 0
    while queue or (lanes >= 0).any():
        for lane in np.flatnonzero(lanes < 0):
            if not queue:
                break
            i = queue.pop()
            lanes[lane], u[lane], spent[lane], fresh[lane] = i, initial[i], 0, True
            traces[lane] = []
        active = lanes >= 0
        fill = lanes[active][0]
        index = np.where(active, lanes, fill)  # idle lanes repeat a subject; ignored
        u_in = np.where(active[:, None], u, initial[fill])
        problems = jax.device_put(jax.tree.leaves(batch.take(index)), sharding)
        out, carried = program(
            problems,
            jax.device_put(u_in, sharding),
            jax.device_put(carried, sharding),
            jax.device_put(fresh | ~active, sharding),
            jax.device_put(
                np.where(active, settings.max_steps - spent, 1).astype(np.int64), sharding
            ),
        )
        out = {k: np.array(v) for k, v in out.items()}
        fresh[:] = False
        spent = spent + np.where(active, out["iterations"], 0)
        finite = np.isfinite(out["loss"])
        for lane in np.flatnonzero(active):
            traces[lane].append((int(spent[lane]), float(out["loss"][lane])))
        finished = active & (
            out["converged"] | ~out["solve_success"] | ~finite | (spent >= settings.max_steps)
        )
        u = out["u"]
        if finished.any():
            rows = np.flatnonzero(finished)
            frame = pd.DataFrame(
                dict(
                    subject=[batch.subjects[lanes[r]] for r in rows],
                    group=[batch.groups[lanes[r]] for r in rows],
                    loss=out["loss"][rows],
                    converged=out["converged"][rows],
                    iterations=spent[rows],
                    status=status_of(
                        out["converged"][rows], out["solve_success"][rows], finite[rows]
                    ),
                    loss_trace=[json.dumps(traces[r]) for r in rows],
                )
            )
            for key in ("estimate", "se", "se_relative", "ci_low", "ci_high"):
                for k, name in enumerate(names):
                    frame[f"{key}[{name}]"] = out[key][rows, k]
            frames.append(frame)
            if on_finished is not None:
                on_finished(frame)
            done += len(rows)
            lanes[finished] = -1
        if on_round is not None:
            on_round(done, total)
    return pd.concat(frames, ignore_index=True)
