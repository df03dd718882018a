"""Experiments: one protocol given to one subject, with what was observed when — as arrays, so
that the prediction of every observation is one solve and a gather, and subjects with ragged
sampling pad to one shape and vmap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Bool, Float, Int

from ..data._dataset import FORCED_GLUCOSE, Dataset, DatasetError
from ..data._records import protocol_from_records
from ..model import INTERVAL_OBSERVABLES as INTERVAL_OBSERVABLES  # re-exported for the app
from ..model import (
    Inputs,
    MgT2DModel,
    interval_end,
    interval_value,
    is_interval,
    sampling_times,
    source_observable,
)
from ..protocols import AbstractProtocol
from ..solve._secretion import Series, simulate_secretion
from ..solve._simulate import Trajectory, simulate, simulate_from_rest
from ..solve._solve import SolverOptions
from ..solve._steady_state import State, steady_state

#: What a forced-glucose secretion experiment (a `GlucoseSeries` as its protocol) predicts:
#: the beta-cell's insulin secretion rate (pmol/min) and plasma C-peptide (pmol/L).
SECRETION_OBSERVABLES: tuple[str, ...] = ("insulin_secretion", "c_peptide")


class Experiment(eqx.Module):
    """Observations of one protocol on one subject.

    The protocol is an `AbstractProtocol` (the whole physiology is simulated) or a
    `GlucoseSeries` (the beta-cell module alone, forced by that plasma glucose series, as
    `simulate_secretion`; it predicts `SECRETION_OBSERVABLES` at times from the series' start).

    - `times`: the distinct sampling times (min), padded by repeating the last;
    - `time_index` / `end_index`: for each observation, the sample it reads (and, for interval
      observables such as 24-h urine, the sample at the end of the interval);
    - `observable_index`: into `observable_names`;
    - `values`, `sigma`: in model units (sigma NaN: from the error model);
    - `mask`: False for padding.
    """

    protocol: AbstractProtocol | Series
    times: Float[Array, " T"]
    time_index: Int[Array, " N"]
    end_index: Int[Array, " N"]
    observable_index: Int[Array, " N"]
    values: Float[Array, " N"]
    sigma: Float[Array, " N"]
    mask: Bool[Array, " N"]
    observable_names: tuple[str, ...] = eqx.field(static=True)

    @property
    def n(self) -> int:
        return int(self.values.shape[-1])

    def predict(
        self, model: MgT2DModel, options: SolverOptions | None = None, rest: State | None = None
    ) -> tuple[Any, Any]:
        """(prediction of every observation, solve succeeded). `rest`: the fasting steady
        state of `model` when already found (`fasting_rest_for`): a protocol that
        `start_at_fasting_rest` starts there, a forced-glucose series holds intracellular
        Mg²⁺ at its value, other protocols ignore it (without it, each finds what it needs)."""
        options = SolverOptions() if options is None else options
        if isinstance(self.protocol, Series):
            return self._predict_secretion(model, options, rest)
        if rest is not None and start_at_fasting_rest(self.protocol):
            traj = simulate_from_rest(
                model, self.protocol, self.times, rest, options=options, throw=False
            )
        else:
            traj = simulate(model, self.protocol, self.times, options=options, throw=False)
        return self.observe(traj), traj.success

    def observe(self, traj: Trajectory) -> Float[Array, " N"]:
        """The prediction of every observation from `traj`, a trajectory sampled at
        `self.times` (model units)."""
        sources = [source_observable(name) for name in self.observable_names]
        selected = traj.select(sources)
        columns = [selected[source] for source in sources]
        matrix = jnp.stack(columns, axis=-1)  # (T, K)
        start = matrix[self.time_index, self.observable_index]
        end = matrix[self.end_index, self.observable_index]
        interval = jnp.asarray([is_interval(n) for n in self.observable_names])
        return interval_value(interval[self.observable_index], start, end, jnp)

    def _predict_secretion(
        self, model: MgT2DModel, options: SolverOptions, rest: State | None
    ) -> tuple[Any, Any]:
        """The forced-glucose path: the beta-cell driven by the glucose series, intracellular
        Mg²⁺ held at the fasting steady state (`rest`'s, when given)."""
        mg_free = None
        if rest is not None:
            mg_free = model.observables(rest.y, Inputs.zeros(), jnp)["intracellular_mg"]
        traj = simulate_secretion(
            model, self.protocol, self.times, mg_free=mg_free, options=options, throw=False
        )
        matrix = jnp.stack(secretion_signals(traj, self.observable_names), axis=-1)
        return matrix[self.time_index, self.observable_index], traj.success


def secretion_signals(traj: Any, names: Sequence[str]) -> list[Any]:
    """The `SECRETION_OBSERVABLES` named by `names` from a `simulate_secretion` trajectory:
    insulin secretion (pmol/min) and C-peptide (pmol/L) at its times."""
    signals = {"insulin_secretion": traj.secretion, "c_peptide": traj.c_peptide}
    return [signals[n] for n in names]


def start_at_fasting_rest(protocol: Any) -> bool:
    """Whether `protocol` starts from the fasting steady state without inputs (a whole-
    physiology protocol that keeps `AbstractProtocol.basal_inputs`): the protocols of one
    subject that do can share one steady-state search."""
    return (
        isinstance(protocol, AbstractProtocol)
        and type(protocol).basal_inputs is AbstractProtocol.basal_inputs
    )


def starts_at_rest(experiments: Sequence[Experiment]) -> list[bool]:
    """Per experiment whether its protocol starts at the fasting steady state."""
    return [start_at_fasting_rest(e.protocol) for e in experiments]


def fasting_rest_for(
    model: MgT2DModel, experiments: Sequence[Experiment], guess: Any = None
) -> tuple[State | None, list[bool]]:
    """(the fasting steady state of `model`, or None when no experiment needs it; per
    experiment whether it starts there, `start_at_fasting_rest`): one steady-state search
    shared by a subject's protocols — one copy of the search in a compiled program, not one
    per protocol. `guess`: the dynamic states to start the search from (`steady_state`)."""
    shared = starts_at_rest(experiments)
    if not any(shared):
        return None, shared
    return steady_state(model, Inputs.zeros(), guess=guess, throw=False), shared


def check_experiment(experiment: Any) -> None:
    """Refuse, with one clear message, an experiment a fit cannot predict: a protocol that is
    neither an `AbstractProtocol` nor a `GlucoseSeries`, or a forced-glucose (`GlucoseSeries`)
    experiment observing something other than `SECRETION_OBSERVABLES` or sampled before the
    series starts."""
    if not isinstance(experiment, Experiment):
        raise TypeError(
            f"an experiment must be an mgjax.fit.Experiment (got {type(experiment).__name__}); "
            "build one with mgjax.fit.make_experiment(protocol, times, observables, values)"
        )
    protocol = experiment.protocol
    if isinstance(protocol, Series):
        other = sorted(set(experiment.observable_names) - set(SECRETION_OBSERVABLES))
        if other:
            raise ValueError(
                f"a forced-glucose secretion experiment (a GlucoseSeries as protocol) predicts "
                f"only {', '.join(SECRETION_OBSERVABLES)}; it cannot observe {', '.join(other)} "
                "(simulate the whole physiology with a protocol such as IVGTT for those)"
            )
        start = float(np.asarray(protocol.times)[0])
        first = float(np.min(np.asarray(experiment.times)))
        if first < start:
            raise ValueError(
                f"a forced-glucose secretion experiment samples at {first:g} min, before its "
                f"glucose series starts ({start:g} min); give the series from the first sample on"
            )
    elif not isinstance(protocol, AbstractProtocol):
        raise TypeError(
            f"an experiment's protocol must be an mgjax protocol (AbstractProtocol) or a "
            f"GlucoseSeries for a forced-glucose secretion fit (got {type(protocol).__name__})"
        )


def make_experiment(
    protocol: AbstractProtocol | Series,
    times: Any,
    observables: Any,
    values: Any,
    sigma: Any = None,
    *,
    observable_names: tuple[str, ...] | None = None,
    pad_to: int | None = None,
    pad_times_to: int | None = None,
) -> Experiment:
    """Build an `Experiment` from per-observation arrays (times in min, model units). The
    protocol may be a `GlucoseSeries` (a forced-glucose secretion experiment, see `Experiment`)."""
    times = np.asarray(times, dtype=float)
    observables = list(observables)
    values = np.asarray(values, dtype=float)
    sigma = np.full(len(values), np.nan) if sigma is None else np.asarray(sigma, dtype=float)
    names = tuple(observable_names or sorted(set(observables)))
    grid = sampling_times(zip(observables, times))
    lookup = {t: i for i, t in enumerate(grid.tolist())}
    time_index = np.array([lookup[float(t)] for t in times], dtype=int)
    end_index = np.array(
        [lookup[interval_end(n, t)] for t, n in zip(times, observables)],
        dtype=int,
    )
    observable_index = np.array([names.index(n) for n in observables], dtype=int)
    mask = np.ones(len(values), dtype=bool)
    if pad_to is not None and pad_to > len(values):
        extra = pad_to - len(values)
        time_index = np.concatenate([time_index, np.zeros(extra, int)])
        end_index = np.concatenate([end_index, np.zeros(extra, int)])
        observable_index = np.concatenate([observable_index, np.zeros(extra, int)])
        values = np.concatenate([values, np.ones(extra)])
        sigma = np.concatenate([sigma, np.ones(extra)])
        mask = np.concatenate([mask, np.zeros(extra, bool)])
    if pad_times_to is not None and pad_times_to > len(grid):
        grid = np.concatenate([grid, np.full(pad_times_to - len(grid), grid[-1])])
    return Experiment(
        protocol=protocol,
        times=jnp.asarray(grid),
        time_index=jnp.asarray(time_index),
        end_index=jnp.asarray(end_index),
        observable_index=jnp.asarray(observable_index),
        values=jnp.asarray(values),
        sigma=jnp.asarray(sigma),
        mask=jnp.asarray(mask),
        observable_names=names,
    )


def subject_covariates(dataset: Dataset, subject: str) -> dict[str, float]:
    """Model parameters set by the subject table (weight → body_weight, height)."""
    row = dataset.subjects[dataset.subjects["subject"] == subject]
    out: dict[str, float] = {}
    if len(row):
        for column, parameter in [("weight", "body_weight"), ("height", "height")]:
            if column in row.columns and not pd.isna(row[column].iloc[0]):
                out[parameter] = float(row[column].iloc[0])
    return out


def experiments_for_subject(
    dataset: Dataset,
    subject: str,
    model: MgT2DModel | None = None,
    *,
    averaged_trials: bool = False,
) -> tuple[Experiment, ...]:
    """One `Experiment` per protocol the subject's observations use, in protocol-name order.
    `averaged_trials`: oral Mg²⁺ trials as their mean daily intake (fast; see docs/protocols.md)."""
    obs = dataset.observations[dataset.observations["subject"] == subject]
    if obs.empty:
        raise DatasetError(f"subject {subject!r} has no observations")
    doses = dataset.doses[dataset.doses["subject"] == subject]
    return experiments_from_records(obs, doses, model, averaged_trials=averaged_trials)


def split_records(protocol_name: str, rows: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
    """(the rows a fit predicts, the rows of the input glucose series or None) of one
    protocol's observations: a `forced_glucose` protocol's glucose rows are its input (the
    measured series driving the beta-cell), not observations to fit."""
    if protocol_name != FORCED_GLUCOSE:
        return rows, None
    glucose = (rows["observable"] == "glucose").to_numpy()
    return rows[~glucose], rows[glucose]


def record_sizes(fitted: pd.DataFrame, series: Any) -> tuple[int, int, int]:
    """(observations, distinct sampling times, input series samples) of one protocol's rows
    as `split_records` returns them: the shapes its `Experiment` has before padding."""
    times = sampling_times(zip(fitted["observable"], fitted["time"]))
    return len(fitted), len(times), 0 if series is None else len(series)


def glucose_series(rows: pd.DataFrame, pad_to: int | None = None) -> Series:
    """The measured glucose series (mmol/L over min) of a `forced_glucose` protocol's glucose
    rows, padded to `pad_to` samples by holding the last value at later minutes (the series
    is held constant after its last sample anyway, so the padding changes nothing)."""
    times = rows["time"].to_numpy(dtype=float)
    values = rows["value"].to_numpy(dtype=float)
    if pad_to is not None and pad_to > len(times):
        extra = np.arange(1, pad_to - len(times) + 1, dtype=float)
        times = np.concatenate([times, times[-1] + extra])
        values = np.concatenate([values, np.full(len(extra), values[-1])])
    return Series(times, values)


def experiments_from_records(
    observations: pd.DataFrame,
    doses: pd.DataFrame,
    model: MgT2DModel | None = None,
    *,
    averaged_trials: bool = False,
    observable_names: dict[str, tuple[str, ...]] | None = None,
    pad_to: dict[str, tuple[int, int, int]] | None = None,
) -> tuple[Experiment, ...]:
    """`Experiment`s from one subject's observation and dose records (model units), one per
    protocol in name order. For batches: `observable_names` per protocol (a shared list) and
    `pad_to` per protocol (observations, distinct times, input series samples; as
    `record_sizes`). A `forced_glucose` protocol becomes a forced-glucose secretion
    experiment: its glucose rows the `GlucoseSeries`, its other rows the observations."""
    out = []
    for protocol_name in sorted(set(observations["protocol"])):
        rows = observations[observations["protocol"] == protocol_name]
        n, t, s = (pad_to or {}).get(protocol_name, (None, None, None))
        rows, series = split_records(protocol_name, rows)
        if series is not None:
            protocol = glucose_series(series, s)
        else:
            protocol = protocol_from_records(
                protocol_name,
                doses[doses["protocol"] == protocol_name],
                rows,
                model,
                averaged_trials=averaged_trials,
            )
        out.append(
            make_experiment(
                protocol,
                rows["time"].to_numpy(),
                rows["observable"].tolist(),
                rows["value"].to_numpy(),
                rows["sigma"].to_numpy(),
                observable_names=(observable_names or {}).get(protocol_name),
                pad_to=n,
                pad_times_to=t,
            )
        )
    return tuple(out)


def stack_experiments(experiments: list[Experiment]) -> Experiment:
    """A batch (leading axis) of experiments of identical structure and padded shapes."""
    return jax.tree.map(lambda *x: jnp.stack(x), *experiments)
