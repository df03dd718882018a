"""Benchmark of batch fitting: mgjax's vmapped lane-pool fit against the SciPy loop a careful
user would write without mgjax, on the same virtual cohort, in one run.

mgjax: `mgjax.batch.fit_batch` (Levenberg–Marquardt with forward-mode Jacobians through the
solver — Rodas4's staggered sensitivities — vmapped over lanes of subjects, finished subjects
replaced between rounds; one worker process per core, as the SciPy loop gets one per core) on
the first 1, 10, 100, 1,000 (10,000 with --large) subjects of a synthetic cohort (default study
design: isoglycaemic clamp + fasting Mg²⁺ labs; 5 free parameters per subject).

SciPy: per subject, `scipy.optimize.least_squares` (TRF, bounds on the log parameters,
finite-difference Jacobian) on the same weighted residuals; each evaluation solves the fasting
steady state (`scipy.optimize.root`) and the clamp (`solve_ivp` LSODA) with the model's own
equations on Python floats. Run on a sample of subjects over a process pool (all cores), with
the ODE tolerance tightened until the finite-difference Jacobians are usable (the rtol giving
the most converged subjects among 1e-6, 1e-8, 1e-10 on a pilot sample is used).

Equal quality: a subject counts as *converged* for either method when its final negative
log-likelihood (the same function, mgjax's, evaluated at each method's estimate) is within 0.05
of the best either method reached for it and not more than 0.05 above the NLL at the subject's
true parameters (the maximum-likelihood estimate is never above it: a fit that ends above it
sits at a spurious optimum, whatever its optimiser reported), and every log-parameter is within
max(0.02, SE/4) of that best estimate. mgjax's count at each size: its converged subjects that
are not above their true parameters' NLL (known for every subject), times the fraction of
those that also match SciPy's best on the sample. Throughput is converged subjects per second
(wall).

    python experiments/benchmarks/bench_batch.py                 # 1 … 1,000 subjects, ≈ 25 min
    python experiments/benchmarks/bench_batch.py --large         # also 10,000
    python experiments/benchmarks/bench_batch.py --quick         # smoke test (2 subjects/method)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import mgjax
from mgjax import batch
from mgjax.fit import INTERVAL_OBSERVABLES
from mgjax.model import ACCUMULATOR_STATES, scalar_math, to_numpy
from mgjax.solve import absolute_tolerances, quadrature_mask
from mgjax.synth import COHORT_PARAMETERS, cohort_error_models, synthesize

NLL_TOLERANCE = 0.05
STATE_NAMES = mgjax.MgT2DModel.state_names()
N_ACCUMULATORS = len(ACCUMULATOR_STATES)


def peak_rss_gib(workers: int = 1) -> float:
    """Peak resident memory of this process plus, with worker processes, `workers` times the
    largest finished child's (an upper bound of the job's total)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if workers > 1 else 0
    return (own + workers * child) / 2**20


# --- the SciPy peer --------------------------------------------------------------------------


class ScipySubject:
    """One subject's weighted residuals on NumPy/SciPy only (the model's own equations on
    floats via its plain mirror)."""

    def __init__(self, problem, rtol: float, y_guess, quadrature_atol: float | None = None):
        self.problem = problem
        self.rtol = rtol
        # mgjax's own (its SolverOptions' default) unless given
        if quadrature_atol is None:
            quadrature_atol = float(mgjax.SolverOptions().quadrature_atol)
        self.quadrature_atol = quadrature_atol
        self.plain = to_numpy(problem.base_model)
        self.experiments = problem.experiments
        self.protocols = [to_numpy(e.protocol) for e in problem.experiments]
        self.y_guess = np.asarray(y_guess)  # the group's typical subject's steady state
        self.lower = np.log(np.asarray(problem.lower))
        self.upper = np.log(np.asarray(problem.upper))
        self.evaluations = 0

    def _set(self, theta):
        infos = mgjax.parameter_infos()
        for name, value in zip(self.problem.free, theta):
            setattr(getattr(self.plain, infos[name].module), name, float(value))

    def predictions(self, theta):
        from scipy.integrate import solve_ivp
        from scipy.optimize import root

        self.evaluations += 1
        self._set(theta)
        model = self.plain
        zero = self.protocols[0].basal_inputs()

        n_dyn = len(self.y_guess) - N_ACCUMULATORS  # accumulators have no steady state
        tail = [0.0] * N_ACCUMULATORS

        def steady(y):
            return np.asarray(model.rates(y.tolist() + tail, zero, scalar_math))[:n_dyn]

        sol = root(steady, self.y_guess[:n_dyn], method="hybr", tol=1e-12)
        y0 = np.concatenate([sol.x, tail])
        out = []
        for e, protocol in zip(self.experiments, self.protocols):
            names = e.observable_names
            times = np.asarray(e.times)
            if getattr(protocol, "at_steady_state", False):
                inputs = protocol.inputs(0.0, y0, None, model, np)
                obs = model.observables(y0.tolist(), inputs, scalar_math)
                rates = model.rates(y0.tolist(), inputs, scalar_math)
                for name, state in INTERVAL_OBSERVABLES.items():  # 24-h collections
                    obs[name] = 1440.0 * float(rates[STATE_NAMES.index(state)])
                values = np.array([[float(obs[n]) for n in names]])
                values = np.repeat(values, len(times), axis=0)
            else:
                z0 = np.asarray(protocol.controller_init(model, jnp.asarray(y0)))
                state0 = np.concatenate([y0, z0])
                n_model = len(y0)

                def f(t, s, protocol=protocol, n_model=n_model):
                    y, z = s[:n_model], s[n_model:]
                    inputs = protocol.inputs(t, y, z, model, np)
                    dy = model.rates(y.tolist(), inputs, scalar_math)
                    return np.concatenate([dy, protocol.controller_rates(t, y, z, model, np)])

                # mgjax's tolerance rule: rtol·1e-3 absolute, the quadrature states (running
                # integrals that feed nothing back) at least `quadrature_atol`
                atol = absolute_tolerances(
                    quadrature_mask(protocol), self.rtol * 1e-3, self.quadrature_atol, np
                )
                jumps = [float(j) for j in np.asarray(protocol.jump_times()) if 0 < j < times[-1]]
                edges = [0.0, *sorted(set(jumps)), float(times[-1])]
                states = np.empty((len(times), len(state0)))
                s, t0 = state0, 0.0
                for t1 in edges[1:]:
                    inside = ((times > t0) | (times == 0.0) & (t0 == 0.0)) & (times <= t1)
                    t_eval = np.unique(np.append(times[inside], t1))
                    sol = solve_ivp(
                        f,
                        (t0, t1),
                        s,
                        method="LSODA",
                        rtol=self.rtol,
                        atol=atol,
                        t_eval=t_eval,
                    )
                    if not sol.success:
                        raise RuntimeError(sol.message)
                    # padded sampling times repeat the last one: look each time up
                    states[inside] = sol.y[:, np.searchsorted(t_eval, times[inside])].T
                    s, t0 = sol.y[:, -1], t1
                values = np.empty((len(times), len(names)))
                for k, t in enumerate(times):
                    y, z = states[k, :n_model], states[k, n_model:]
                    inputs = protocol.inputs(t, y, z, model, np)
                    obs = model.observables(y.tolist(), inputs, scalar_math)
                    values[k] = [float(obs[n]) for n in names]
            index_t, index_o = np.asarray(e.time_index), np.asarray(e.observable_index)
            out.append(values[index_t, index_o])
        return out

    def residuals(self, x):
        theta = np.exp(x)
        try:
            preds = self.predictions(theta)
        except Exception:
            return np.full(sum(int(np.sum(e.mask)) for e in self.experiments), 1e3)
        rs = []
        for e, p in zip(self.experiments, preds):
            mask = np.asarray(e.mask)
            names = e.observable_names
            em = [self.problem.error_models[names[k]] for k in np.asarray(e.observable_index)]
            a = np.array([float(m.additive) for m in em])
            b = np.array([float(m.proportional) for m in em])
            sigma = np.sqrt(a**2 + (b * p) ** 2)
            rs.append(((np.asarray(e.values) - p) / sigma)[mask])
        return np.concatenate(rs)


def scipy_fit(args):
    """Fit one subject with least_squares; returns (log θ, seconds, evaluations, status)."""
    problem, rtol, x0, y_guess = args
    from scipy.optimize import least_squares

    subject = ScipySubject(problem, rtol, y_guess)
    t0 = time.perf_counter()
    try:
        sol = least_squares(
            subject.residuals,
            x0,
            bounds=(subject.lower + 1e-9, subject.upper - 1e-9),
            method="trf",
            xtol=1e-8,
            ftol=1e-8,
            gtol=1e-8,
            max_nfev=200,
        )
        x, status = sol.x, int(sol.status)
    except Exception:
        x, status = x0, -1
    return x, time.perf_counter() - t0, subject.evaluations, status


# --- quality -----------------------------------------------------------------------------


def nll_at(problem, log_theta) -> float:
    u = problem.from_values(jnp.exp(jnp.asarray(log_theta)))
    return float(problem.negative_log_likelihood(u))


def truth_nll(batch_, truth: pd.DataFrame, chunk: int = 1024) -> dict[str, float]:
    """Per subject: the negative log-likelihood at its true parameters (synthetic cohort; +inf
    where a true value lies outside the fit's bounds). The maximum-likelihood estimate is never
    above it, so a fit that ends above it is not at the best optimum. Vmapped over chunks of
    subjects (one solve per subject at a time would cost a GPU its launch latency each)."""
    table = truth.pivot(index="subject", columns="parameter", values="value")
    names = list(batch_.one(0).free)
    evaluate = eqx.filter_jit(jax.vmap(lambda p, v: p.negative_log_likelihood(p.from_values(v))))
    out = {}
    for start in range(0, len(batch_.subjects), chunk):
        index = np.arange(start, min(start + chunk, len(batch_.subjects)))
        problems = jax.tree.map(jnp.asarray, batch_.take(index))
        values = table.loc[[batch_.subjects[i] for i in index], names].to_numpy()
        nll = np.asarray(evaluate(problems, jnp.asarray(values)))
        for i, value in zip(index, nll):
            out[batch_.subjects[i]] = float(value) if np.isfinite(value) else np.inf
    return out


def judge(batch_, subjects, mg, sp, truth):
    """Per subject: NLL of each method's estimate and whether each reached the best optimum:
    within NLL_TOLERANCE of the best either method reached and of the NLL at the true
    parameters (`truth`), and every log-parameter within max(0.02, SE/4) of the best
    estimate."""
    rows = []
    for s in subjects:
        i = batch_.subjects.index(s)
        problem = jax.tree.map(jnp.asarray, batch_.one(i))
        est = mg[mg["subject"] == s].set_index("parameter")
        x_mg = np.log(est.loc[list(problem.free), "estimate"].to_numpy())
        se_log = est.loc[list(problem.free), "se_relative"].to_numpy()
        candidates = {"mgjax": x_mg}
        if s in sp:
            candidates["scipy"] = sp[s]
        nll = {k: nll_at(problem, x) for k, x in candidates.items()}
        best = min(nll, key=nll.get)
        tol = np.maximum(0.02, 0.25 * np.where(np.isfinite(se_log), se_log, 1.0))
        row = dict(subject=s, best_nll=nll[best], truth_nll=truth[s])
        for k, x in candidates.items():
            row[f"{k}_nll"] = nll[k]
            row[f"{k}_ok"] = bool(
                nll[k] <= nll[best] + NLL_TOLERANCE
                and nll[k] <= truth[s] + NLL_TOLERANCE
                and np.all(np.abs(x - candidates[best]) <= tol)
            )
        rows.append(row)
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100,1000")
    parser.add_argument("--large", action="store_true", help="also 10,000 subjects")
    parser.add_argument("--scipy-subjects", type=int, default=20)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count(),
        help="mgjax CPU worker processes (fit_batch(workers=…); default: all cores)",
    )
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count(), help="SciPy pool size (default: all cores)"
    )
    parser.add_argument(
        "--no-scipy", action="store_true", help="mgjax's table only (no peer, no ratio)"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("experiments/output/bench_batch"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] + ([10_000] if args.large else [])
    scipy_n = args.scipy_subjects
    pilot_rtols = (1e-6, 1e-8, 1e-10)
    if args.quick:
        sizes, scipy_n, pilot_rtols = [2], 2, (1e-8,)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"JAX {jax.__version__}, devices {jax.devices()}")

    t0 = time.perf_counter()
    cohort = synthesize(max(sizes), seed=0)
    folder = Path(tempfile.mkdtemp(prefix="mgjax-bench-batch-"))
    cohort.write(folder)
    dataset = mgjax.load_dataset(folder)
    subjects_all = sorted(cohort.subjects["subject"])
    errors = cohort_error_models(sorted(dataset.observations["observable"].unique()))
    print(f"cohort: {len(subjects_all)} subjects synthesised in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    everyone = batch.build_batches(
        dataset, COHORT_PARAMETERS, subjects=subjects_all, error_models=errors
    )
    truth = {}
    for b in everyone:
        truth.update(truth_nll(b, cohort.truth))
    seconds = time.perf_counter() - t0
    print(f"NLL at the true parameters of {len(truth)} subjects in {seconds:.1f} s")

    rows, results, at_best_by_size = [], {}, {}
    compiled: set[int] = set()
    for n in sizes:
        subset = subjects_all[:n]
        width = min(args.width, n)
        settings = batch.BatchSettings(width=width)
        t0 = time.perf_counter()
        res = batch.fit_batch(
            dataset,
            COHORT_PARAMETERS,
            settings=settings,
            error_models=errors,
            subjects=subset,
            workers=args.workers,
        )
        wall = time.perf_counter() - t0
        workers = res.summary.get("workers", 1)
        # a width's first round includes compiling its program (once per width in this
        # process; every worker process compiles its own, in parallel); the run time without
        # it is the wall time less that round's excess over a typical round
        fresh = workers > 1 or width not in compiled
        compile_s = res.summary["seconds_compile_estimate"] if fresh else 0.0
        compiled.add(width)
        run_s = wall - compile_s
        results[n] = res
        conv = int(res.subjects["converged"].sum())
        # converged at the best optimum: not above the NLL at the true parameters
        fitted = res.subjects.set_index("subject")
        at_best = fitted["converged"] & (
            fitted["loss"] <= pd.Series(truth).reindex(fitted.index) + NLL_TOLERANCE
        )
        at_best_by_size[n] = at_best
        rows.append(
            dict(
                subjects=n,
                width=width,
                workers=workers,
                wall_seconds=wall,
                compile_seconds=compile_s,
                run_seconds=run_s,
                subjects_per_second=n / run_s,
                converged=conv,
                converged_at_best=int(at_best.sum()),
                converged_per_second=int(at_best.sum()) / run_s,
                median_iterations=float(res.subjects["iterations"].median()),
                peak_rss_gib=peak_rss_gib(workers),
            )
        )
        print(json.dumps(rows[-1]), flush=True)

    if args.no_scipy:
        table = pd.DataFrame(rows)
        table.to_csv(args.out / "bench_batch.csv", index=False)
        print()
        print(table.round(3).to_string(index=False))
        return

    # SciPy peer on a sample
    build = batch.build_batches(
        dataset, COHORT_PARAMETERS, subjects=subjects_all[:scipy_n], error_models=errors
    )
    assert len(build) == 1
    sample = build[0]
    problems = [jax.tree.map(jnp.asarray, sample.one(i)) for i in range(len(sample))]
    starts = [
        (
            np.log(np.asarray(p.to_values(p.initial()))),
            np.asarray(mgjax.steady_state(p.base_model).y),
        )
        for p in problems
    ]
    mg_params = results[max(sizes)].parameters
    # the SciPy workers are CPU programs: spawned children inherit this, so a GPU host's JAX in
    # them neither initialises the GPU nor competes for its memory
    os.environ["JAX_PLATFORMS"] = "cpu"
    chosen, best_ok = pilot_rtols[-1], -1
    pilot = min(4, len(problems))
    if len(pilot_rtols) > 1:
        for rtol in pilot_rtols:
            with mp.get_context("spawn").Pool(args.processes) as pool:
                out = pool.map(
                    scipy_fit, [(p, rtol, *st) for p, st in zip(problems[:pilot], starts)]
                )
            sp = {sample.subjects[i]: o[0] for i, o in enumerate(out)}
            ok = int(judge(sample, sample.subjects[:pilot], mg_params, sp, truth)["scipy_ok"].sum())
            print(f"SciPy pilot rtol {rtol:g}: {ok}/{pilot} converged")
            if ok > best_ok:
                chosen, best_ok = rtol, ok
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(args.processes) as pool:
        out = pool.map(scipy_fit, [(p, chosen, *st) for p, st in zip(problems, starts)])
    scipy_wall = time.perf_counter() - t0
    sp = {sample.subjects[i]: o[0] for i, o in enumerate(out)}
    verdict = judge(sample, sample.subjects, mg_params, sp, truth)
    verdict.to_csv(args.out / "quality.csv", index=False)
    scipy_conv = int(verdict["scipy_ok"].sum())
    mg_conv_sample = int(verdict["mgjax_ok"].sum())
    scipy_rate = scipy_conv / scipy_wall
    table = pd.DataFrame(rows)
    # at each size mgjax's count of converged subjects not above their true parameters' NLL is
    # known for every subject; agreement with SciPy's best on the sample scales it further
    sample_at_best = at_best_by_size[max(sizes)].loc[verdict["subject"]].to_numpy()
    agreed = int((verdict["mgjax_ok"].to_numpy() & sample_at_best).sum())
    agreement = agreed / max(int(sample_at_best.sum()), 1)
    table["converged_per_second_equal_quality"] = table["converged_per_second"] * agreement
    table["ratio_vs_scipy"] = table["converged_per_second_equal_quality"] / max(scipy_rate, 1e-12)
    table.to_csv(args.out / "bench_batch.csv", index=False)
    summary = dict(
        scipy=dict(
            subjects=len(problems),
            rtol=chosen,
            wall_seconds=scipy_wall,
            seconds_per_subject=float(np.mean([o[1] for o in out])),
            evaluations_per_subject=float(np.mean([o[2] for o in out])),
            converged=scipy_conv,
            converged_per_second=scipy_rate,
            processes=args.processes,
        ),
        mgjax_sample_converged=mg_conv_sample,
        mgjax_sample_agreement=agreement,
    )
    (args.out / "bench_batch.json").write_text(json.dumps(summary, indent=2))
    print()
    print(table.round(3).to_string(index=False))
    print(
        f"\nSciPy least_squares + LSODA (rtol {chosen:g}, {args.processes} processes) on "
        f"{len(problems)} "
        f"subjects: {scipy_conv} converged in {scipy_wall:.1f} s = {scipy_rate:.3f} converged "
        f"subjects/s ({summary['scipy']['seconds_per_subject']:.1f} s and "
        f"{summary['scipy']['evaluations_per_subject']:.0f} model evaluations per subject)"
    )
    print(
        f"mgjax on the same {len(problems)} subjects: {mg_conv_sample} at the best optimum "
        f"(equal-quality criterion)"
    )
    big = table.iloc[-1]
    print(
        f"at {int(big['subjects'])} subjects: mgjax {big['converged_per_second_equal_quality']:.2f}"
        f" converged subjects/s = {big['ratio_vs_scipy']:.1f}× the SciPy loop (target ≥ 20×); "
        f"compile {table['compile_seconds'].max():.1f} s (target < 60 s)"
    )


if __name__ == "__main__":
    main()
