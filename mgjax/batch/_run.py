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
#: Standard-normal quantile of the χ² goodness-of-fit test that sends a fit to another start
#: (0.999 one-sided).
CHI2_Z = 3.09


@dataclass(frozen=True)
class BatchSettings:
    """How to run a batch.

    - `width`: lanes of the vmapped program (subjects in flight at once; bounds memory); a
      multiple of the number of devices;
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
    - `devices`: devices to shard the lanes over (default all local devices).
    """

    width: int = 64
    round_steps: int = 4
    max_steps: int = 100
    rtol: float = 1e-8
    atol: float = 1e-8
    decrement: float = DECREMENT_TOLERANCE
    restarts: int = 1
    restart_step: float = 0.01
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
    first_step,
    round_steps: int,
    rtol: float,
    atol: float,
    decrement: float,
):
    """Up to `round_steps` (and at most `budget`) Levenberg–Marquardt iterations of one subject
    from `u`, continuing the optimiser state `carried` (its arrays) unless `fresh` (then its
    trust region starts at `first_step`: the damping of the first step is 1/first_step); then
    the goodness of fit and the uncertainty at the end."""
    solver, fn, options = _lm(problem, rtol, atol)
    dynamic0, static = _lm_state(problem, u, rtol, atol)
    dynamic0 = eqx.tree_at(
        lambda s: s.search_state.step_size,
        dynamic0,
        jnp.asarray(first_step, dynamic0.search_state.step_size.dtype),
    )
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
    # χ² of the data: the weighted residuals less the trailing prior residuals (one per u)
    chi2 = jnp.sum(state.f_info.residual[: -u.shape[0]] ** 2)
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
        chi2=chi2,
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
    and reused by later runs (`mgjax.runtime._programs`). Returns (program, state template)."""
    from ..runtime._programs import compile_program, stored_json

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

    def flat_round(problem_leaves, u, state_leaves, fresh, budget, first_step):
        problems = jax.tree.unflatten(one_tree, problem_leaves)
        first = jax.tree.map(lambda x: x[0], problems)
        state_tree = jax.tree.structure(
            eqx.filter_eval_shape(lambda p, y: _lm_state(p, y, rtol, atol)[0], first, u[0])
        )
        state = jax.tree.unflatten(state_tree, state_leaves)
        out = jax.vmap(
            lambda p, y, c, f, b, s: _subject_round(p, y, c, f, b, s, rs, rtol, atol, decrement)
        )(problems, u, state, fresh, budget, first_step)
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


def chi2_limit(dof: np.ndarray, z: float = CHI2_Z) -> np.ndarray:
    """Upper quantile (`z` standard deviations) of the χ² distribution with `dof` degrees of
    freedom (Wilson–Hilferty: (χ²/k)^(1/3) is nearly normal, mean 1 − 2/(9k), variance
    2/(9k); within 2 % of the exact quantile, 0.2 % from 30 degrees of freedom)."""
    k = np.maximum(np.asarray(dof, dtype=float), 1.0)
    return k * (1.0 - 2.0 / (9.0 * k) + z * np.sqrt(2.0 / (9.0 * k))) ** 3


def implausible_fit(chi2: np.ndarray, n_observations: np.ndarray, n_free: int) -> np.ndarray:
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
    `on_finished` after each round (a wide frame: subject, group, loss, converged, iterations
    (over all starts), status, starts, chi2, n_observations, loss_trace (JSON
    [[iterations, loss], …] at the end of each round), then `estimate[p]`, `se[p]`,
    `se_relative[p]`, `ci_low[p]`, `ci_high[p]` per free quantity); `on_round(finished so
    far, total)` reports progress; `on_compiled(program)` gets the compiled round (its
    `seconds` and `source`). A fit that ends implausibly (`implausible_fit`) is started again
    (at most `settings.restarts` times; `restart_point`) and the start with the lowest
    negative log-likelihood is kept. Returns all finished rows."""
    devices = tuple(settings.devices or jax.local_devices())
    if settings.width % len(devices):
        raise ValueError(
            f"width {settings.width} is not a multiple of the {len(devices)} devices; "
            f"use a multiple of {len(devices)}"
        )
    sharding = lane_sharding(devices)
    names = batch.problems.names
    todo = [i for i, s in enumerate(batch.subjects) if s not in skip]
    queue = [(i, 0) for i in reversed(todo)]  # (subject, start number), taken from the end
    total = len(todo)
    if total == 0:
        return pd.DataFrame()
    # fewer subjects than lanes: shrink to the subjects, rounded up to the devices
    width = min(settings.width, -(-total // len(devices)) * len(devices))
    initial = np.asarray(_initial(batch.problems))
    n_observations = observation_counts(batch)
    lanes = np.full(width, -1)
    starts = np.zeros(width, dtype=int)
    u = np.zeros((width, initial.shape[1]))
    spent = np.zeros(width, dtype=int)
    fresh = np.zeros(width, dtype=bool)
    first_step = np.ones(width)
    program, carried = round_program(batch, width, settings, sharding)
    if on_compiled is not None:
        on_compiled(program)
    frames: list[pd.DataFrame] = []
    traces: list[list[tuple[int, float]]] = [[] for _ in range(width)]  # (iterations, loss)
    best: dict[int, dict] = {}  # a restarted subject's best start so far
    done = 0
    while queue or (lanes >= 0).any():
        for lane in np.flatnonzero(lanes < 0):
            if not queue:
                break
            i, k = queue.pop()
            lanes[lane], starts[lane], spent[lane], fresh[lane] = i, k, 0, True
            u[lane], first_step[lane] = restart_point(initial[i], k, settings)
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
            jax.device_put(np.where(active, first_step, 1.0), sharding),
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
        status = status_of(out["converged"], out["solve_success"], finite)
        rows = []
        for r in np.flatnonzero(finished):
            i = int(lanes[r])
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
                for k, name in enumerate(names):
                    row[f"{key}[{name}]"] = float(out[key][r, k])
            # this start after the subject's earlier ones: iterations counted over all starts,
            # the lowest negative log-likelihood kept
            earlier = best.pop(i, None)
            used = earlier["iterations"] if earlier else 0
            trace = (earlier["trace"] if earlier else []) + [(used + n, x) for n, x in traces[r]]
            if earlier is not None and not lower_loss(row["loss"], earlier["loss"]):
                row = earlier
            row.update(iterations=used + int(spent[r]), trace=trace, starts=int(starts[r]) + 1)
            retry = implausible_fit(row["chi2"], row["n_observations"], len(names))
            if retry and starts[r] < settings.restarts:
                best[i] = row
                queue.append((i, int(starts[r]) + 1))  # next in line
            else:
                rows.append(row)
        lanes[finished] = -1
        if rows:
            frame = pd.DataFrame(rows)
            frame["loss_trace"] = [json.dumps(t) for t in frame.pop("trace")]
            frames.append(frame)
            if on_finished is not None:
                on_finished(frame)
            done += len(rows)
        if on_round is not None:
            on_round(done, total)
    return pd.concat(frames, ignore_index=True)
