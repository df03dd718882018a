"""The demonstration behind `mgjax run`: fasting states of the presets and a supplementation
course, as a CSV table and a PNG figure in the run directory."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._config import RunConfig
from ._presets import preset
from ._simulate import simulate
from ._solve import SolverOptions
from .protocols import ConstantInputs

OBSERVED = ["serum_mg", "intracellular_mg", "glucose", "insulin", "homa_ir", "hba1c", "urinary_mg"]


def presets_demo(out: Path, cfg: RunConfig) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weeks, dose = cfg.supplement.weeks, cfg.supplement.dose_mmol_per_day
    ts = jnp.linspace(0.0, weeks * 7 * 1440.0, weeks + 1)
    options = SolverOptions(
        rtol=cfg.solver.rtol, atol=cfg.solver.atol, max_steps=cfg.solver.max_steps
    )
    rows, frames = [], []
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for name in cfg.presets:
        traj = simulate(preset(name), ConstantInputs(oral_mg=dose), ts, options=options)
        frame = pd.DataFrame({k: np.asarray(traj[k]) for k in OBSERVED})
        frame.insert(0, "week", np.arange(weeks + 1))
        frame.insert(0, "preset", name)
        frames.append(frame)
        rows.append(
            dict(
                preset=name,
                **{
                    f"fasting_{k}": float(frame[k].iloc[0])
                    for k in ["serum_mg", "glucose", "homa_ir"]
                },
                **{
                    f"week{weeks}_{k}": float(frame[k].iloc[-1])
                    for k in ["serum_mg", "glucose", "homa_ir"]
                },
            )
        )
        for ax, key in zip(axes, ["serum_mg", "glucose", "homa_ir"]):
            ax.plot(frame["week"], frame[key], marker="o", label=name)
            ax.set_title(key)
            ax.set_xlabel("week")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "supplementation.png", dpi=120)
    plt.close(fig)
    pd.concat(frames).to_csv(out / "trajectories.csv", index=False)
    return rows
