"""`mgjax.simulate`: parameters + protocol + sampling times → named trajectory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..model import (
    OBSERVABLE_UNITS,
    Inputs,
    MgT2DModel,
    interval_end,
    interval_value,
    is_interval,
    source_observable,
)
from ..protocols import AbstractProtocol, fasting
from ._solve import SolverOptions, solve
from ._steady_state import State, steady_state
from ._vector_field import coupled_rates, split, state_names


class Trajectory(eqx.Module):
    """A solved trajectory. Read states and observables by name: `traj["glucose"]`.

    - `ts`: sampling times (min);
    - `ys`: states at `ts`, shape (times, states): the model's states, then the protocol's
      controller states (`Trajectory.state_names`);
    - `model`, `protocol`: what was solved (observables are computed from them on demand, so
      a loss that reads one observable traces and differentiates only that one);
    - `success`: whether the steady state and the solve both succeeded;
    - `num_steps`: accepted + rejected solver steps.
    """

    ts: Float[Array, " times"]
    ys: Float[Array, "times states"]
    model: MgT2DModel
    protocol: AbstractProtocol
    success: Bool[Array, ""]
    num_steps: Int[Array, ""]

    @property
    def state_names(self) -> tuple[str, ...]:
        return state_names(self.protocol)

    def __getitem__(self, name: str) -> Float[Array, " times"]:
        names = self.state_names
        if name in names:
            return self.ys[..., names.index(name)]
        if name in OBSERVABLE_UNITS:
            return observe(self.model, self.protocol, self.ts, self.ys, name)
        known = sorted(set(OBSERVABLE_UNITS) | set(names))
        raise KeyError(f"unknown observable or state {name!r}; known: {', '.join(known)}")

    def select(self, names: Sequence[str]) -> dict[str, Float[Array, " times"]]:
        """The states and observables `names` at `ts`, as a dict: the observables from one
        evaluation of the model's observables per time (`traj[name]` evaluates them once per
        name: that many traces and copies in a compiled program)."""
        states = self.state_names
        computed = tuple(n for n in dict.fromkeys(names) if n not in states)
        for name in computed:
            if name not in OBSERVABLE_UNITS:
                self[name]  # raises the unknown-name error
        values = observe(self.model, self.protocol, self.ts, self.ys, computed) if computed else {}
        return {n: self[n] if n in states else values[n] for n in names}

    @property
    def observables(self) -> dict[str, Float[Array, " times"]]:
        """Every observable at `ts`, as a dict."""
        return self.select(tuple(OBSERVABLE_UNITS))

    @staticmethod
    def units(name: str) -> str:
        if name in OBSERVABLE_UNITS:
            return OBSERVABLE_UNITS[name]
        names = MgT2DModel.state_names()
        if name in names:
            return MgT2DModel.state_units()[names.index(name)]
        return "-"


def observe(model: MgT2DModel, protocol: AbstractProtocol, ts, ys, name: str | tuple) -> Any:
    """Observable `name` at each (t, y) pair (works for a batch of trajectories too); for a
    tuple of names, a dict of them from one evaluation of the observables."""

    def one(t, state):
        y, z = split(state)
        values = model.observables(y, protocol.inputs(t, y, z, model, jnp), jnp)
        return {n: values[n] for n in name} if isinstance(name, tuple) else values[name]

    if ys.ndim == 2:
        return jax.vmap(one)(ts, ys)
    return jax.vmap(lambda m, p, t, y: observe(m, p, t, y, name))(model, protocol, ts, ys)


@eqx.filter_jit
def simulate(
    model: MgT2DModel,
    protocol: AbstractProtocol | None = None,
    ts: Float[Array, " times"] | None = None,
    *,
    y0: State | Float[Array, " states"] | None = None,
    options: SolverOptions | None = None,
    throw: bool = True,
) -> Trajectory:
    """Simulate `model` under `protocol`, sampling at `ts`.

    **Arguments:**

    - `model`: parameters (`mgjax.preset(...)` or any `MgT2DModel`).
    - `protocol`: an `AbstractProtocol`; default plain fasting.
    - `ts`: sampling times in minutes from the protocol start (increasing, ≥ 0).
    - `y0`: initial model state (a `State` or a vector of the model's states); default the
      fasting steady state under the protocol's basal inputs. The protocol's controller states
      are appended (`protocol.controller_init`).
    - `options`: `SolverOptions` (solver, tolerances, step control, adjoint, max_steps).
    - `throw`: raise on failure. With `throw=False` (batches, fitting) a failed solve returns
      `success=False` and non-finite values, never an exception.

    **Returns:** a `Trajectory`. Pure: works under `jax.jit`, `jax.vmap` and `jax.grad`.
    """
    options = SolverOptions() if options is None else options
    if protocol is None:
        protocol = fasting()
    if ts is None:
        ts = jnp.linspace(0.0, 180.0, 37)
    ts = jnp.asarray(ts, dtype=jnp.float64)
    if y0 is None:
        return simulate_from_rest(
            model,
            protocol,
            ts,
            steady_state(model, protocol.basal_inputs(), throw=throw),
            options=options,
            throw=throw,
        )
    return _simulate_from(model, protocol, ts, y0, options, throw)


@eqx.filter_jit
def simulate_from_rest(
    model: MgT2DModel,
    protocol: AbstractProtocol,
    ts: Float[Array, " times"],
    rest: State,
    *,
    options: SolverOptions | None = None,
    throw: bool = True,
) -> Trajectory:
    """`simulate` from `rest`, the fasting steady state under `protocol.basal_inputs()`
    already found (so that several protocols of one subject share one steady-state search:
    one copy in a compiled program instead of one per protocol)."""
    options = SolverOptions() if options is None else options
    ts = jnp.asarray(ts, dtype=jnp.float64)
    if getattr(protocol, "at_steady_state", False):
        return _at_rest(model, protocol, ts, rest)
    return _simulate_from(model, protocol, ts, rest, options, throw)


def _simulate_from(model, protocol, ts, y0, options, throw) -> Trajectory:
    """The protocol's solve from `y0` (a `State` or a vector of the model's states)."""
    y0, ok0 = _augmented_start(model, protocol, y0)
    sol = solve(model, protocol, y0, ts, options, throw=throw, alive=ok0)
    ok = ok0 & (sol.result == dfx.RESULTS.successful)
    ys = sol.ys
    return Trajectory(
        ts=ts,
        ys=ys,
        model=model,
        protocol=protocol,
        success=ok,
        num_steps=sol.stats["num_steps"],
    )


def _at_rest(
    model: MgT2DModel, protocol: AbstractProtocol, ts: Float[Array, " times"], y0: State
) -> Trajectory:
    """Fasting from the fasting steady state: no solve; the accumulators grow at their rate."""
    ok = y0.success & jnp.all(jnp.isfinite(y0.y))
    rates = coupled_rates(model, protocol, ts[0], y0.y, jnp)
    ys = y0.y[None, :] + ts[:, None] * rates[None, :]
    return Trajectory(
        ts=ts, ys=ys, model=model, protocol=protocol, success=ok, num_steps=jnp.asarray(0)
    )


def _augmented_start(
    model: MgT2DModel, protocol: AbstractProtocol, y0: State | Float[Array, " states"]
) -> tuple[Float[Array, " augmented"], Bool[Array, ""]]:
    """The model state followed by the protocol's controller states, and whether it is usable.

    A non-finite start (a failed steady state, NaN parameters) is flagged and replaced by
    zeros, so the solve skips it (zero vector field) instead of running to max_steps on NaNs."""
    if isinstance(y0, State):
        ok0, y0 = y0.success, y0.y
    else:
        ok0 = jnp.asarray(True)
    y0 = jnp.concatenate([y0, protocol.controller_init(model, y0)])
    finite = jnp.all(jnp.isfinite(y0))
    return jnp.where(finite, y0, 0.0), ok0 & finite


def observables(
    model: MgT2DModel,
    state: State | Float[Array, " states"],
    inputs: Inputs | None = None,
) -> dict[str, Float[Array, ""]]:
    """Every observable (`OBSERVABLE_UNITS`, clinical units) at one model state, e.g. the
    fasting steady state: `mgjax.observables(model, mgjax.steady_state(model))["serum_mg"]`.

    `state`: a `State` or a vector of the model's states; `inputs`: constant inputs (default
    none). Pure, differentiable in `model` and `state`."""
    y = state.y if isinstance(state, State) else jnp.asarray(state)
    return model.observables(y, Inputs.zeros() if inputs is None else inputs, jnp)


def observable_names() -> tuple[str, ...]:
    """Names of the observables, as read from a `Trajectory` or `observables`."""
    return tuple(OBSERVABLE_UNITS)


def observed_values(
    traj: Trajectory, observable: str, times: Sequence[float] | np.ndarray
) -> Float[np.ndarray, " n"]:
    """`observable` (model units) observed at each of `times` (min), read from `traj`, which
    sampled (at least) `mgjax.model.sampling_times` of these observations: an interval
    observable (24-h urine) is its source's difference over the day after each time."""
    index = {float(t): i for i, t in enumerate(np.asarray(traj.ts))}
    series = np.asarray(traj[source_observable(observable)])
    start = series[[index[float(t)] for t in times]]
    end = series[[index[interval_end(observable, t)] for t in times]]
    return interval_value(is_interval(observable), start, end)
