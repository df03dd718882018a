"""Compile and run time of every protocol, for one subject and for a vmapped batch of subjects
(different parameters and different doses/rates in one compiled program), on this machine.

    python experiments/benchmarks/bench_protocols.py [--batch 1000] [--quick]
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from timing import timed  # experiments/benchmarks/timing.py

import mgjax

RM_DOSE_MMOL = 637.0 / 24.305


def population(n: int, seed: int = 0):
    """n subjects around `t2dm` (20% CV on five parameters)."""
    model = mgjax.preset("t2dm")
    names = ["signalling_capacity", "beta_cell_mass", "dietary_mg_intake", "egp_max", "gfr"]
    rng = np.random.default_rng(seed)
    base = mgjax.get_parameters(model, tuple(names))
    values = {
        k: jnp.asarray(float(v) * np.exp(0.2 * rng.standard_normal(n))) for k, v in base.items()
    }
    return jax.vmap(lambda v: mgjax.set_parameters(model, v))(values), rng


def protocols(n: int, rng):
    """(name, one protocol, a batch of n protocols of the same shape, sampling times)."""

    def batch(make, values):
        return jax.tree.map(lambda *x: jnp.stack(x), *[make(v) for v in values])

    doses = rng.uniform(10.0, 30.0, n)
    rates = rng.uniform(20.0, 80.0, n)
    trial = mgjax.OralMagnesiumTrial.daily(RM_DOSE_MMOL, 16, visit_weeks=(0, 16))
    averaged = mgjax.OralMagnesiumTrial.daily(RM_DOSE_MMOL, 16, visit_weeks=(0, 16), averaged=True)
    hec = mgjax.HyperinsulinemicClamp()
    hgc = mgjax.HyperglycemicClamp()
    ivgtt = mgjax.IVGTT()
    return [
        (
            "HEC 120 min",
            hec,
            batch(lambda r: mgjax.HyperinsulinemicClamp(insulin_rate=r), rates),
            hec.sampling_times(),
        ),
        (
            "hyperglycaemic clamp",
            hgc,
            batch(lambda r: mgjax.HyperglycemicClamp(increment=r / 10), rates),
            hgc.sampling_times(),
        ),
        (
            "FSIVGTT 180 min",
            ivgtt,
            batch(lambda d: mgjax.IVGTT(glucose_dose=d / 100), doses),
            ivgtt.sampling_times(),
        ),
        (
            "16-wk trial, averaged",
            averaged,
            batch(lambda d: eqx.tree_at(lambda p: p.dose, averaged, d), doses),
            averaged.sampling_times(),
        ),
        (
            "16-wk trial, daily doses",
            trial,
            batch(lambda d: eqx.tree_at(lambda p: p.dose, trial, d), doses),
            trial.sampling_times(),
        ),
    ]


def main(n: int = 1000, quick: bool = False) -> dict:
    subjects, rng = population(n)
    one_subject = mgjax.preset("t2dm")
    rows = {}
    print(f"JAX {jax.__version__} on {jax.devices()[0]}; batch of {n} subjects\n")
    print(
        f"{'protocol':28s}{'compile 1 (s)':>14s}{'run 1 (ms)':>12s}{'steps':>8s}"
        f"{'compile n (s)':>15s}{'ms/subject':>12s}{'steps max':>11s}"
    )
    for name, protocol, batch, ts in protocols(n, rng):

        def run(m, p, t=ts, throw=True):
            traj = mgjax.simulate(m, p, t, throw=throw)
            return traj.ys, traj.num_steps

        single = eqx.filter_jit(run)
        first, r1 = timed(single, one_subject, protocol, repeat=3)
        c1 = first - r1  # compile: the first call less a warm one
        steps1 = int(single(one_subject, protocol)[1])
        batched = eqx.filter_jit(jax.vmap(lambda m, p: run(m, p, throw=False)))
        first, rn = timed(batched, subjects, batch, repeat=1)
        cn = first - rn
        steps = batched(subjects, batch)[1]
        rows[name] = dict(
            compile_single_s=c1,
            run_single_s=r1,
            steps=steps1,
            compile_batch_s=cn,
            per_subject_s=rn / n,
            steps_max=int(np.max(steps)),
        )
        print(
            f"{name:28s}{c1:14.2f}{r1 * 1e3:12.2f}{steps1:8d}{cn:15.2f}"
            f"{rn / n * 1e3:12.3f}{int(np.max(steps)):11d}"
        )
        if quick and len(rows) >= 2:
            break
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    main(args.batch if not args.quick else 10, args.quick)
