"""Bayesian inference with the model inside numpyro: NUTS posterior of three parameters of one
virtual subject from a small synthetic dataset, with posterior intervals checked against the
truth.

The numpyro model samples the parameters from log-normal priors (median at the `t2dm` preset,
×/÷ 2 at one SD), builds the subject with `mgjax.set_parameters` and evaluates the same
experiment objects and likelihood the fitter uses (`mgjax.fit.make_experiment`,
`Experiment.predict`), observed with 5 % proportional error. NUTS differentiates through the
steady-state solver and the Diffrax clamp solves in reverse mode.

Data: a 120-min hyperinsulinaemic–euglycaemic clamp (glucose, insulin, GIR every 10 min) and a
180-min hyperglycaemic clamp (insulin, C-peptide every 10 min) of a subject drawn near the
`t2dm` preset.

    python experiments/examples/embed_bayesian.py [--out experiments/output/embedding] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import mgjax
from mgjax.fit import make_experiment

FREE = ("signalling_capacity", "beta_cell_mass", "egp_max")
TRUTH_FACTORS = (1.25, 0.8, 1.1)  # the subject: these multiples of the t2dm preset
NOISE = 0.05  # proportional


def experiments(model, key, quick: bool = False):
    """Noisy synthetic observations of the two clamps (model units; `quick`: the first only)."""
    designs = [
        (
            mgjax.HyperinsulinemicClamp(),
            jnp.arange(10.0, 121.0, 10.0),
            ("glucose", "insulin", "glucose_infusion"),
        ),
        (
            mgjax.HyperglycemicClamp(),
            jnp.arange(10.0, 181.0, 10.0),
            ("insulin", "c_peptide"),
        ),
    ]
    out = []
    for protocol, times, names in designs[:1] if quick else designs:
        traj = mgjax.simulate(model, protocol, times)
        t, o, v = [], [], []
        for name in names:
            key, sub = jr.split(key)
            clean = np.asarray(traj[name])
            noisy = clean * (1.0 + NOISE * np.asarray(jr.normal(sub, clean.shape)))
            t += list(np.asarray(times))
            o += [name] * len(times)
            v += list(noisy)
        out.append(make_experiment(protocol, t, o, v))
    return out


def numpyro_model(base, exps, data=True):
    import numpyro
    import numpyro.distributions as dist

    values = {}
    for name in FREE:
        median = float(mgjax.get_parameter(base, name))
        values[name] = numpyro.sample(name, dist.LogNormal(jnp.log(median), jnp.log(2.0)))
    subject = mgjax.set_parameters(base, values)
    for k, exp in enumerate(exps):
        prediction, ok = exp.predict(subject, mgjax.SolverOptions(max_steps=4096))
        prediction = jnp.where(ok, prediction, 1e6)  # a failed solve is very unlikely data
        numpyro.sample(
            f"obs_{k}",
            dist.Normal(prediction, NOISE * jnp.abs(prediction)),
            obs=exp.values if data else None,
        )


def main(argv=None):
    from numpyro.infer import MCMC, NUTS, init_to_median

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="experiments/output/embedding")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="a few draws (smoke test)")
    args = parser.parse_args(argv)
    warmup, samples = (5, 5) if args.quick else (args.warmup, args.samples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    base = mgjax.preset("t2dm")
    truth_values = {n: float(mgjax.get_parameter(base, n)) * f for n, f in zip(FREE, TRUTH_FACTORS)}
    truth = mgjax.set_parameters(base, truth_values)
    exps = experiments(truth, jr.PRNGKey(0), quick=args.quick)

    t0 = time.perf_counter()
    kernel = NUTS(
        numpyro_model,
        init_strategy=init_to_median,
        target_accept_prob=0.85,
        max_tree_depth=3 if args.quick else 8,
    )
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=samples, progress_bar=False)
    mcmc.run(jr.PRNGKey(1), base, exps)
    seconds = time.perf_counter() - t0
    posterior = mcmc.get_samples()
    extra = mcmc.get_extra_fields()
    rows = {}
    for name in FREE:
        draws = np.asarray(posterior[name])
        lo, med, hi = np.percentile(draws, [2.5, 50, 97.5])
        rows[name] = dict(
            truth=truth_values[name],
            prior_median=float(mgjax.get_parameter(base, name)),
            posterior_median=float(med),
            ci95=[float(lo), float(hi)],
            covered=bool(lo <= truth_values[name] <= hi),
            relative_width=float((hi - lo) / med),
        )
    result = dict(
        warmup=warmup,
        samples=samples,
        seconds=seconds,
        divergences=int(np.sum(np.asarray(extra["diverging"]))) if "diverging" in extra else None,
        parameters=rows,
        all_covered=all(r["covered"] for r in rows.values()),
    )
    print(json.dumps(result, indent=2))
    (out / "bayesian.json").write_text(json.dumps(result, indent=2))
    _plot(out / "bayesian.png", posterior, rows)
    return result


def _plot(path, posterior, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FREE), figsize=(4 * len(FREE), 3.2))
    for ax, name in zip(axes, FREE):
        ax.hist(np.asarray(posterior[name]), bins=30, color="tab:blue", alpha=0.7)
        ax.axvline(rows[name]["truth"], color="k", label="truth")
        ax.axvline(rows[name]["prior_median"], color="grey", ls=":", label="prior median")
        for x in rows[name]["ci95"]:
            ax.axvline(x, color="tab:red", ls="--", lw=0.8)
        ax.set_title(name, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle("NUTS posterior (numpyro) through the mgjax solver; dashed: 95 % interval")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
