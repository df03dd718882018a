"""Compile and run time of the embedded solve, as a user's JAX program sees it.

For a 120-min hyperinsulinaemic clamp (M-value) and a 12-week daily-dose Mg²⁺ trial (serum Mg²⁺
at the end), each under `jax.jit`: the plain solve, `jax.grad` w.r.t. all 81 parameters
(reverse mode, the default adjoint), `jax.jacfwd` w.r.t. 2 inputs (forward mode), the 2×2
Hessian (`jacfwd∘jacfwd`, forward mode) and the solve vmapped over 100 subjects. Prints compile
time (trace + lower + XLA compile, first call), the run time of a warm call (median of 5) and
the time per solver step.

    python experiments/benchmarks/bench_embedding.py [--out experiments/output/embedding] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import pandas as pd

import mgjax

FORWARD = mgjax.SolverOptions(adjoint=dfx.ForwardMode())
CLAMP = mgjax.HyperinsulinemicClamp(insulin_rate=1.0, per_kg=True)
TRIAL = mgjax.OralMagnesiumTrial.daily(15.0, 12, visit_weeks=(0, 12))


def clamp_readout(model, x, options=mgjax.SolverOptions()):
    clamp = eqx.tree_at(lambda p: p.insulin_rate, CLAMP, x)
    traj = mgjax.simulate(model, clamp, clamp.sampling_times(), options=options)
    return clamp.summary(traj)["m_value"], traj.num_steps


def trial_readout(model, x, options=mgjax.SolverOptions()):
    trial = eqx.tree_at(lambda p: p.dose, TRIAL, x)
    traj = mgjax.simulate(model, trial, trial.visit_days * 1440.0, options=options)
    return traj["serum_mg"][-1], traj.num_steps


CASES = {
    "hyperinsulinemic_clamp": (clamp_readout, "signalling_capacity", 1.0),
    "oral_mg_trial_12_weeks": (trial_readout, "dct_capacity", 15.0),
}


def _time(fn, *args, repeats: int = 5):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - t0)
    return compile_s, statistics.median(runs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="experiments/output/embedding")
    parser.add_argument("--quick", action="store_true", help="the clamp only")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = mgjax.preset("t2dm")
    batch = jax.tree.map(lambda x: jnp.stack([x] * 100), model)
    rows = []
    for case, (readout, name, x0) in CASES.items():
        if args.quick and case != "hyperinsulinemic_clamp":
            continue
        steps = int(jax.jit(readout)(model, jnp.asarray(x0))[1])

        def value(m, x, readout=readout):
            return readout(m, x)[0]

        def of_theta(theta, readout=readout, name=name):
            m = mgjax.set_parameters(model, {name: theta[0]})
            return readout(m, theta[1], FORWARD)[0]

        theta = jnp.array([float(mgjax.get_parameter(model, name)), x0])
        programs = {
            "solve": (jax.jit(value), (model, jnp.asarray(x0))),
            "grad, 81 parameters (reverse)": (jax.jit(jax.grad(value)), (model, jnp.asarray(x0))),
            "jacfwd, 2 inputs (forward)": (jax.jit(jax.jacfwd(of_theta)), (theta,)),
            "hessian 2x2 (jacfwd of jacfwd)": (jax.jit(jax.jacfwd(jax.jacfwd(of_theta))), (theta,)),
            "solve, vmap over 100 subjects": (
                jax.jit(jax.vmap(value, in_axes=(0, None))),
                (batch, jnp.asarray(x0)),
            ),
        }
        for program, (fn, fn_args) in programs.items():
            compile_s, run_s = _time(fn, *fn_args)
            per = run_s / (100 if "vmap" in program else 1)
            rows.append(
                dict(
                    protocol=case,
                    program=program,
                    solver_steps=steps,
                    compile_s=round(compile_s, 2),
                    run_ms=round(1e3 * run_s, 2),
                    run_ms_per_subject=round(1e3 * per, 3),
                    us_per_step=round(1e6 * per / steps, 1),
                )
            )
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    table.to_csv(out / "bench_embedding.csv", index=False)
    env = dict(backend=jax.default_backend(), devices=[str(d) for d in jax.devices()])
    (out / "bench_embedding.json").write_text(json.dumps(dict(env=env, rows=rows), indent=2))
    return table


if __name__ == "__main__":
    main()
