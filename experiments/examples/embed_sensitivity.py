"""Sensitivity analysis through the solver: which parameters most move the clamp M-value and the
steady-state serum Mg²⁺?

- **Local** (all 81 parameters, one `jax.jacfwd` for both outputs): normalised sensitivities
  at the healthy reference on each parameter's natural scale: ∂ln y/∂ln p for positive
  parameters, ∂ln y/∂logit p for fractions (bounded by 0 and 1: a fraction of 0.999 cannot grow
  by half), and ∂ln y/∂p · (upper − lower)/4 for the few that may change sign.
- **Global** (variance-based, Sobol first-order S1 and total-order ST, SALib's Saltelli design
  and estimator): the parameters ranked in the local top 8 of either output, each uniform on its
  natural scale over ×/÷ 1.5 around the reference (odds ×/÷ 1.5 for fractions), within its
  plausible range; every design point is a vmapped simulation.

M-value: the mean glucose infusion rate over the last 30 min of a 120-min hyperinsulinaemic–
euglycaemic clamp (1 mU/kg/min), mg/kg/min. Serum Mg²⁺: total serum Mg²⁺ at the fasting steady
state, mmol/L.

    python experiments/examples/embed_sensitivity.py [--out experiments/output/embedding] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import mgjax

FORWARD = mgjax.SolverOptions(adjoint=dfx.ForwardMode())
CLAMP = mgjax.HyperinsulinemicClamp(insulin_rate=1.0, per_kg=True)
OUTPUTS = ("m_value", "serum_mg")


def outputs(model, options=FORWARD):
    """(M-value mg/kg/min, steady-state serum Mg²⁺ mmol/L) of one parameter set."""
    state = mgjax.steady_state(model, throw=False)  # the clamp starts from it: solved once
    traj = mgjax.simulate(
        model, CLAMP, CLAMP.sampling_times(), y0=state, options=options, throw=False
    )
    m_value = CLAMP.summary(traj)["m_value"]
    serum = mgjax.observables(model, state)["serum_mg"]
    return jnp.stack([m_value, serum])


def natural_scale(name: str) -> str:
    """ "logit" for fractions, "log" for positive parameters, "linear" for signed ones."""
    info = mgjax.parameter_infos()[name]
    if info.unit in ("-", "1") and info.lower >= 0.0 and info.upper <= 1.0:
        return "logit"
    return "log" if info.lower > 0 else "linear"


def to_value(name: str, x):
    kind = natural_scale(name)
    if kind == "logit":
        return jax.nn.sigmoid(x)
    return jnp.exp(x) if kind == "log" else x


def from_value(name: str, v: float) -> float:
    kind = natural_scale(name)
    if kind == "logit":
        return float(np.log(v / (1.0 - v)))
    return float(np.log(v)) if kind == "log" else float(v)


def local_sensitivities(reference):
    infos = mgjax.parameter_infos()
    names = list(infos)
    x0 = jnp.asarray([from_value(n, float(mgjax.get_parameter(reference, n))) for n in names])

    @eqx.filter_jit
    def log_outputs(x):
        values = {n: to_value(n, x[i]) for i, n in enumerate(names)}
        return jnp.log(outputs(mgjax.set_parameters(reference, values)))

    jac = np.asarray(jax.jacfwd(log_outputs)(x0))  # (2, 81): ∂ln y/∂x
    width = np.array(
        [
            (infos[n].upper - infos[n].lower) / 4.0 if natural_scale(n) == "linear" else 1.0
            for n in names
        ]
    )
    table = pd.DataFrame(jac * width, index=list(OUTPUTS), columns=names).T
    table.index.name = "parameter"
    table["scale"] = [natural_scale(n) for n in names]
    return table


def global_sensitivities(reference, names, n_base: int, seed: int = 0):
    from SALib.analyze import sobol
    from SALib.sample import sobol as sobol_sample

    infos = mgjax.parameter_infos()
    bounds = []
    for n in names:
        v = float(mgjax.get_parameter(reference, n))
        x = from_value(n, v)
        if natural_scale(n) == "linear":
            half = (infos[n].upper - infos[n].lower) / 8.0
            lo, hi = x - half, x + half
        else:
            lo, hi = x - np.log(1.5), x + np.log(1.5)
        # within the plausible range
        lo = max(lo, from_value(n, max(infos[n].lower, 1e-12)))
        hi = min(
            hi,
            from_value(n, min(infos[n].upper, 1.0 - 1e-12))
            if natural_scale(n) == "logit"
            else from_value(n, infos[n].upper),
        )
        bounds.append([lo, hi])
    problem = dict(num_vars=len(names), names=list(names), bounds=bounds)
    design = sobol_sample.sample(problem, n_base, calc_second_order=False, seed=seed)

    @eqx.filter_jit
    def evaluate(xs):
        def one(x):
            values = {n: to_value(n, x[i]) for i, n in enumerate(names)}
            return outputs(mgjax.set_parameters(reference, values), mgjax.SolverOptions())

        return jax.vmap(one)(xs)

    y = np.asarray(evaluate(jnp.asarray(design)))
    finite = np.all(np.isfinite(y), axis=1)
    if not finite.all():
        raise RuntimeError(f"{(~finite).sum()} design points failed to solve")
    rows = []
    for k, output in enumerate(OUTPUTS):
        res = sobol.analyze(problem, y[:, k], calc_second_order=False, seed=seed)
        for i, n in enumerate(names):
            rows.append(
                dict(
                    output=output,
                    parameter=n,
                    scale=natural_scale(n),
                    S1=res["S1"][i],
                    S1_conf=res["S1_conf"][i],
                    ST=res["ST"][i],
                    ST_conf=res["ST_conf"][i],
                )
            )
    return pd.DataFrame(rows), len(design)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="experiments/output/embedding")
    parser.add_argument("--base-samples", type=int, default=512, help="Saltelli base samples")
    parser.add_argument("--quick", action="store_true", help="small design (smoke test)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reference = mgjax.preset("healthy")

    t0 = time.perf_counter()
    local = local_sensitivities(reference)
    t_local = time.perf_counter() - t0
    top = 3 if args.quick else 8
    screened = []
    for output in OUTPUTS:
        for n in local[output].abs().sort_values(ascending=False).index[:top]:
            if n not in screened:
                screened.append(n)
    t0 = time.perf_counter()
    sobol_table, n_points = global_sensitivities(
        reference, screened, 16 if args.quick else args.base_samples
    )
    t_global = time.perf_counter() - t0

    local.to_csv(out / "sensitivity_local.csv")
    sobol_table.to_csv(out / "sensitivity_sobol.csv", index=False)
    summary = {
        output: dict(
            local_top=local[output].abs().sort_values(ascending=False).index[:5].tolist(),
            sobol_top=sobol_table[sobol_table.output == output]
            .sort_values("ST", ascending=False)
            .parameter.iloc[:5]
            .tolist(),
        )
        for output in OUTPUTS
    }
    result = dict(
        local_seconds=t_local,
        global_seconds=t_global,
        global_design_points=n_points,
        screened=screened,
        ranking=summary,
    )
    print(local.reindex(screened).round(3).to_string())
    print(sobol_table.round(3).to_string(index=False))
    print(json.dumps(result, indent=2))
    (out / "sensitivity.json").write_text(json.dumps(result, indent=2))
    _plot(out / "sensitivity.png", local, sobol_table, screened)
    return result


def _plot(path, local, sobol_table, screened):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for k, output in enumerate(OUTPUTS):
        top = local[output].abs().sort_values(ascending=False).index[:10][::-1]
        axes[0, k].barh(top, local.loc[top, output], color="tab:blue")
        axes[0, k].set_title(f"local ∂ln({output})/∂ln p")
        part = sobol_table[sobol_table.output == output].set_index("parameter").loc[screened]
        x = np.arange(len(screened))
        axes[1, k].bar(x - 0.2, part.S1, 0.4, yerr=part.S1_conf, label="S1")
        axes[1, k].bar(x + 0.2, part.ST, 0.4, yerr=part.ST_conf, label="ST")
        axes[1, k].set_xticks(x, screened, rotation=60, ha="right", fontsize=7)
        axes[1, k].set_title(f"Sobol indices of {output}")
        axes[1, k].legend(fontsize=8)
    for ax in axes[0]:
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
