"""The vicious circle: serum Mg²⁺ against insulin resistance across Mg²⁺ intake and
insulin-signalling strength, at the fasting steady state of the coupled model.

Each point is a subject whose parameters are the `t2dm` preset with a reduced functional
beta-cell mass (0.3) and two changes: habitual dietary Mg²⁺ intake (the points along each
line) and post-receptor signalling capacity σ (one line each). Both arcs of the circle show:
along a line, less Mg²⁺ intake lowers serum Mg²⁺ and raises HOMA-IR; across lines, weaker
signalling raises HOMA-IR *and* lowers serum Mg²⁺ (renal TRPM6 and cellular uptake lose their
insulin drive; hyperglycaemia adds glycosuric wasting).

    python experiments/examples/vicious_circle.py [--out experiments/output] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import mgjax


def grid(intakes, capacities, base: str = "t2dm", beta_cell_mass: float = 0.3) -> pd.DataFrame:
    """Fasting steady states over the intake × signalling-capacity grid (one vmapped call)."""
    model = mgjax.set_parameters(mgjax.preset(base), beta_cell_mass=beta_cell_mass)
    ii, cc = np.meshgrid(intakes, capacities, indexing="ij")
    values = dict(
        dietary_mg_intake=jnp.asarray(ii.ravel()), signalling_capacity=jnp.asarray(cc.ravel())
    )
    batch = jax.vmap(lambda v: mgjax.set_parameters(model, v))(values)

    @eqx.filter_jit
    def fasting(m):
        state = mgjax.steady_state(m, throw=False)
        obs = m.observables(state.y, mgjax.Inputs.zeros(), jnp)
        return state.success, obs

    success, obs = jax.vmap(fasting)(batch)
    keys = [
        "serum_mg",
        "intracellular_mg",
        "glucose",
        "insulin",
        "homa_ir",
        "hba1c",
        "urinary_mg",
        "fractional_mg_excretion",
        "trpm6_activity",
    ]
    frame = pd.DataFrame({k: np.asarray(obs[k]) for k in keys})
    frame.insert(0, "signalling_capacity", cc.ravel())
    frame.insert(0, "dietary_mg_intake_mmol_day", ii.ravel())
    frame["converged"] = np.asarray(success)
    return frame


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("viridis")
    capacities = sorted(frame["signalling_capacity"].unique())
    for i, c in enumerate(capacities):
        sub = frame[frame["signalling_capacity"] == c].sort_values("dietary_mg_intake_mmol_day")
        color = cmap(i / max(1, len(capacities) - 1))
        ax1.plot(sub["serum_mg"], sub["homa_ir"], "-o", ms=3, color=color, label=f"σ = {c:.2f}")
        ax2.plot(sub["dietary_mg_intake_mmol_day"], sub["serum_mg"], "-o", ms=3, color=color)
    ax1.axvline(0.70, color="grey", ls="--", lw=0.8)
    ax1.text(0.702, ax1.get_ylim()[1] * 0.95, "hypoMg < 0.70", fontsize=8, color="grey")
    ax1.set_xlabel("fasting serum Mg²⁺ (mmol/L)")
    ax1.set_ylabel("HOMA-IR")
    ax1.set_title("Serum Mg²⁺ vs insulin resistance\n(points: dietary Mg²⁺ intake)")
    ax1.legend(fontsize=7, title="signalling capacity", title_fontsize=7)
    ax2.set_xlabel("dietary Mg²⁺ intake (mmol/day)")
    ax2.set_ylabel("fasting serum Mg²⁺ (mmol/L)")
    ax2.set_title("Weaker insulin signalling wastes Mg²⁺")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(out: Path = Path("experiments/output"), quick: bool = False) -> pd.DataFrame:
    intakes = np.linspace(4.0, 20.0, 5 if quick else 17)
    capacities = np.array(
        [1.0, 0.6, 0.4, 0.3] if quick else [1.0, 0.8, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3]
    )
    frame = grid(intakes, capacities)
    plot(frame, out / "vicious_circle.png")
    frame.to_csv(out / "vicious_circle.csv", index=False)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(frame.round(3).to_string(index=False))
    print(f"\n{int(frame['converged'].sum())}/{len(frame)} steady states converged")
    # the two arcs, in numbers
    full = frame[frame["signalling_capacity"] == capacities[-2]]
    lo, hi = full.iloc[0], full.iloc[-1]
    print(
        f"Mg²⁺ intake {hi.dietary_mg_intake_mmol_day:.0f} → {lo.dietary_mg_intake_mmol_day:.0f} "
        f"mmol/day (σ = {capacities[-2]:.2f}): serum Mg²⁺ {hi.serum_mg:.3f} → "
        f"{lo.serum_mg:.3f} mmol/L, "
        f"HOMA-IR {hi.homa_ir:.3f} → {lo.homa_ir:.3f}"
    )
    usual = frame[np.isclose(frame["dietary_mg_intake_mmol_day"], intakes[len(intakes) // 2])]
    a, b = usual.iloc[0], usual.iloc[-1]
    print(
        f"signalling capacity {a.signalling_capacity:.2f} → {b.signalling_capacity:.2f} at "
        f"{a.dietary_mg_intake_mmol_day:.0f} mmol/day: serum Mg²⁺ {a.serum_mg:.3f} → "
        f"{b.serum_mg:.3f} mmol/L, HOMA-IR {a.homa_ir:.2f} → {b.homa_ir:.2f}, FEMg "
        f"{a.fractional_mg_excretion:.2f} → {b.fractional_mg_excretion:.2f}%"
    )
    print(f"wrote {out / 'vicious_circle.png'} and {out / 'vicious_circle.csv'}")
    return frame


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/output"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    main(args.out, args.quick)
