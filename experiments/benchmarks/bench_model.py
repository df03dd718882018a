"""Benchmark of the model solve: mgjax (Diffrax) against SciPy solve_ivp, in one run.

Prints compile and run time of one 3-hour and one 16-week solve and of their gradients, a
vmapped batch of subjects, and SciPy LSODA / BDF / Radau on the same equations and protocols
(the model's own vector field evaluated on Python floats — the fastest form a careful SciPy user
would write — with a JAX-computed Jacobian or SciPy's finite differences, whichever is faster),
with ratios; both sides use the same tolerances (rtol 1e-6, atol 1e-9, the quadrature states'
absolute tolerance 1e-6: `SolverOptions.quadrature_atol`). Budgets (issue: coupled model):
cold compile of solve and of gradient ≤ 15 s each; a 16-week solve no slower than LSODA;
vmapped over 1,000 subjects ≥ 10× faster per subject.

    python experiments/benchmarks/bench_model.py            # full run (≈ 3–5 min on 2 cores)
    python experiments/benchmarks/bench_model.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from timing import timed  # experiments/benchmarks/timing.py

import mgjax
from mgjax.solve import jax_jacobian, scipy_solve

WEEK = 7 * 1440.0
PROTOCOLS = {
    "3-hour infusion": (
        mgjax.ConstantInputs(insulin_infusion=450.0, glucose_infusion=1.5),
        jnp.linspace(0.0, 180.0, 37),
    ),
    "16-week supplementation": (mgjax.ConstantInputs(oral_mg=26.0), jnp.arange(17.0) * WEEK),
}


def population(model, n, seed=0):
    """n subjects: a few parameters log-normally perturbed (20% CV) around `model`."""
    names = ["signalling_capacity", "beta_cell_mass", "dietary_mg_intake", "egp_max", "gfr"]
    rng = np.random.default_rng(seed)
    base = {k: float(v) for k, v in mgjax.get_parameters(model, tuple(names)).items()}
    values = {k: jnp.asarray(base[k] * np.exp(0.2 * rng.standard_normal(n))) for k in names}
    return jax.vmap(lambda v: mgjax.set_parameters(model, v))(values)


def scipy_time(model, protocol, ts, y0, method, repeat=3):
    """Best wall time over `repeat` and over the two Jacobian options (the JAX Jacobian is
    compiled before timing; the steady state is given, as for mgjax)."""
    best, label = np.inf, ""
    y0 = np.asarray(y0.y)
    jax_jac = jax_jacobian(model, protocol)
    for jac in [jax_jac, "finite-difference"]:

        def solve(jac=jac):
            return scipy_solve(
                model,
                protocol,
                np.asarray(ts),
                method=method,
                rtol=1e-6,
                atol=1e-9,
                quadrature_atol=float(mgjax.SolverOptions().quadrature_atol),  # mgjax's rule
                jacobian=jac,
                y0=y0,
            )

        _, t = timed(solve, repeat=repeat)  # the first call warms the JAX Jacobian
        if t < best:
            best, label = t, ("jax" if callable(jac) else jac)
    return best, label


def bench_protocol(model, y0, protocol, ts, n_batch: int, quick: bool) -> dict:
    """All measurements for one protocol."""
    row: dict = {}
    solve = eqx.filter_jit(lambda m, y: mgjax.simulate(m, protocol, ts, y0=y).ys)
    row["compile_s"], row["run_s"] = timed(solve, model, y0)
    row["compile_s"] -= row["run_s"]
    row["steps"] = int(mgjax.simulate(model, protocol, ts, y0=y0).num_steps)

    if quick:  # the smoke test skips the gradients (their compiles dominate its cost)
        for key in ("grad_compile_s", "grad_run_s", "fwd_grad_compile_s", "fwd_grad_run_s"):
            row[key] = float("nan")
        row["fwd_vs_reverse_max_rel"] = float("nan")
    else:

        def scalar(m):
            traj = mgjax.simulate(m, protocol, ts)
            return jnp.log(traj["glucose"][-1]) + jnp.log(traj["serum_mg"][-1])

        grad = eqx.filter_jit(jax.grad(scalar))
        row["grad_compile_s"], row["grad_run_s"] = timed(grad, model)
        row["grad_compile_s"] -= row["grad_run_s"]

        # The same gradient in forward mode (81 tangents carried through one solve): no reverse
        # pass through the checkpointed step loop, so it compiles like the solve itself.
        forward = mgjax.SolverOptions(adjoint=dfx.ForwardMode())
        params, static = eqx.partition(model, eqx.is_inexact_array)

        def scalar_forward(p):
            traj = mgjax.simulate(eqx.combine(p, static), protocol, ts, options=forward)
            return jnp.log(traj["glucose"][-1]) + jnp.log(traj["serum_mg"][-1])

        forward_grad = eqx.filter_jit(jax.jacfwd(scalar_forward))
        row["fwd_grad_compile_s"], row["fwd_grad_run_s"] = timed(forward_grad, params)
        row["fwd_grad_compile_s"] -= row["fwd_grad_run_s"]
        reverse = jnp.stack(jax.tree.leaves(eqx.filter(grad(model), eqx.is_inexact_array)))
        forward_ = jnp.stack(jax.tree.leaves(forward_grad(params)))
        floor = 1e-6 * jnp.max(jnp.abs(reverse))
        row["fwd_vs_reverse_max_rel"] = float(
            jnp.max(jnp.abs(forward_ - reverse) / jnp.maximum(jnp.abs(reverse), floor))
        )

    # A batch of subjects with different parameters. Their fasting states are computed
    # first (vmapped, timed separately), then the vmapped solve is timed from them — the
    # same job as the SciPy peer's, which also starts from a given state.
    batch = population(model, n_batch)
    fasting = eqx.filter_jit(jax.vmap(lambda m: mgjax.steady_state(m, throw=False)))
    first, best = timed(fasting, batch, repeat=2)
    row["batch_steady_state_per_subject_s"] = best / n_batch
    y0s = fasting(batch)
    batched = eqx.filter_jit(
        jax.vmap(lambda m, y: mgjax.simulate(m, protocol, ts, y0=y, throw=False).ys)
    )
    first, best = timed(batched, batch, y0s, repeat=3)
    row["batch_n"] = n_batch
    row["batch_compile_s"] = first - best
    row["batch_per_subject_s"] = best / n_batch
    steps = np.asarray(
        eqx.filter_jit(
            jax.vmap(lambda m, y: mgjax.simulate(m, protocol, ts, y0=y, throw=False).num_steps)
        )(batch, y0s)
    )
    row["batch_steps_mean"], row["batch_steps_max"] = float(steps.mean()), int(steps.max())

    for solver_name, solver in [("Kvaerno5", dfx.Kvaerno5()), ("Tsit5", dfx.Tsit5())]:
        if quick:  # the smoke test skips the other Diffrax solvers (Kvaerno5 compiles slowly)
            row[solver_name] = "skipped (--quick)"
            continue
        options = mgjax.SolverOptions(solver=solver)
        other = eqx.filter_jit(
            lambda m, y, o=options: mgjax.simulate(m, protocol, ts, y0=y, options=o, throw=False)
        )
        traj = other(model, y0)
        if not bool(traj.success):
            row[solver_name] = "failed (max_steps)"
            continue
        c, r = timed(other, model, y0, repeat=3)
        row[solver_name] = dict(run_s=r, compile_s=c - r, steps=int(traj.num_steps))

    for method in ["LSODA", "BDF", "Radau"]:
        t, jac = scipy_time(model, protocol, ts, y0, method, repeat=1 if quick else 3)
        row[f"scipy_{method}_s"] = t
        row[f"scipy_{method}_jacobian"] = jac
    return row


def main(quick: bool = False, out: Path | None = None) -> dict:
    model = mgjax.preset("t2dm_hypomagnesemia")
    y0 = mgjax.steady_state(model)
    n_batch = 20 if quick else 1000
    results: dict = {}
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}; diffrax {dfx.__version__}")
    protocols = dict(list(PROTOCOLS.items())[:1]) if quick else PROTOCOLS
    for name, (protocol, ts) in protocols.items():
        results[name] = bench_protocol(model, y0, protocol, ts, n_batch, quick)

    print()
    header = f"{'':26s}" + "".join(f"{name[:18]:>20s}" for name in protocols)
    print(header)
    print("-" * len(header))

    def line(label, key, fmt="{:.3g}", scale=1.0):
        vals = []
        for name in protocols:
            v = results[name].get(key)
            if isinstance(v, (int, float)):
                vals.append(fmt.format(v * scale if scale != 1.0 else v))
            else:
                vals.append(str(v))
        print(f"{label:26s}" + "".join(f"{v:>20s}" for v in vals))

    line("mgjax Rodas4 run (ms)", "run_s", scale=1e3)
    line("mgjax steps", "steps", fmt="{:d}")
    line("mgjax compile (s)", "compile_s")
    line("gradient run (ms)", "grad_run_s", scale=1e3)
    line("gradient compile (s)", "grad_compile_s")
    line("fwd-mode gradient run (ms)", "fwd_grad_run_s", scale=1e3)
    line("fwd-mode gradient compile", "fwd_grad_compile_s")
    line("fwd vs reverse max rel.", "fwd_vs_reverse_max_rel")
    line(f"vmap {n_batch}: ms/subject", "batch_per_subject_s", scale=1e3)
    line("  (+ steady state ms/subj.)", "batch_steady_state_per_subject_s", scale=1e3)
    line("  steps mean", "batch_steps_mean", fmt="{:.0f}")
    line("  steps max (sets cost)", "batch_steps_max", fmt="{:d}")
    line(f"vmap {n_batch}: compile (s)", "batch_compile_s")
    for s in ["Kvaerno5", "Tsit5"]:
        vals = []
        for name in protocols:
            v = results[name][s]
            vals.append(f"{v['run_s'] * 1e3:.3g} ({v['steps']})" if isinstance(v, dict) else v)
        print(f"{s + ' run ms (steps)':26s}" + "".join(f"{v:>20s}" for v in vals))
    for method in ["LSODA", "BDF", "Radau"]:
        line(f"SciPy {method} (ms)", f"scipy_{method}_s", scale=1e3)
    print()
    print("Ratios (SciPy time / mgjax time, same run; >1 means mgjax is faster):")
    for name in protocols:
        r = results[name]
        ratios = {m: r[f"scipy_{m}_s"] / r["run_s"] for m in ["LSODA", "BDF", "Radau"]}
        batch_ratio = r["scipy_LSODA_s"] / r["batch_per_subject_s"]
        r["ratios"] = dict(single=ratios, batch_vs_lsoda=batch_ratio)
        print(
            f"  {name:24s} single: "
            + ", ".join(f"{m} {v:.1f}x" for m, v in ratios.items())
            + f"; vmapped per subject vs LSODA: {batch_ratio:.1f}x"
        )
    trial = results[list(protocols)[-1]]
    budgets = {
        "cold compile of solve <= 15 s": all(r["compile_s"] <= 15 for r in results.values()),
        "cold compile of gradient (reverse mode) <= 15 s": all(
            r["grad_compile_s"] <= 15 for r in results.values()
        ),
        "cold compile of gradient (forward mode) <= 15 s": all(
            r["fwd_grad_compile_s"] <= 15 for r in results.values()
        ),
        f"{list(protocols)[-1]} solve no slower than LSODA": trial["run_s"]
        <= trial["scipy_LSODA_s"],
        f"vmapped {n_batch} >= 10x LSODA per subject (every protocol)": all(
            results[name]["ratios"]["batch_vs_lsoda"] >= 10 for name in protocols
        ),
    }
    print("Budgets:", ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in budgets.items()))
    results["budgets"] = budgets
    results["platform"] = dict(jax=jax.__version__, device=str(jax.devices()[0]))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny batch, fewer repeats")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON")
    args = parser.parse_args()
    main(quick=args.quick, out=args.out)
