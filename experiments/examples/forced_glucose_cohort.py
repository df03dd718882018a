"""Beta-cell function from forced-glucose secretion data: a simulated cohort in the dataset
format, fitted per subject (`mgjax fit`) and as a population (`mgjax population`, SAEM).

Each subject drinks nothing and receives nothing: its measured plasma glucose (an OGTT-like
excursion, 6 or 10 samples over 2–3 h) drives the beta-cell module alone (the `forced_glucose`
protocol, docs/data.md), and its insulin secretion rate (reconstructed from C-peptide, as Mari
and colleagues do) and plasma C-peptide are observed with 5 % proportional noise. The truth:
log-normal beta-cell mass (ω 0.3; `t2dm` subjects half the healthy mass) and glucokinase S0.5
(typical 7.5 mmol/L, ω 0.1), each subject's other parameters from its group's preset.

    python experiments/examples/forced_glucose_cohort.py --subjects 6 --out runs/fg
    python experiments/examples/forced_glucose_cohort.py --subjects 40 --population --out runs/fg40

prints the estimates beside the truth (per subject: the error in SEs; population: the typical
values, the group effect and the ω).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd

import mgjax

LONG = np.array([0.0, 10, 20, 30, 45, 60, 90, 120, 150, 180])
SHORT = np.array([0.0, 15, 30, 60, 90, 120])
FREE = ["beta_cell_mass", "gk_s05"]
POPULATION = """\
population:
  structural_model: coupled
  parameters: [beta_cell_mass, gk_s05]
  random: [beta_cell_mass, gk_s05]
  covariates:
    - {parameter: beta_cell_mass, covariate: group, kind: categorical, level: t2dm}
  omega: diagonal
  omega_start: 0.3
  method: saem
  covariance: stochastic
  saem: {exploration: 150, smoothing: 100, annealing: 100, chains: 1, information_draws: 100}
  importance_samples: 200
"""


def glucose_curve(times: np.ndarray, basal: float, peak: float) -> np.ndarray:
    """An OGTT-like plasma glucose excursion (mmol/L over min), peaking at 40 min."""
    return basal + (peak - basal) * (times / 40.0) * np.exp(1.0 - times / 40.0)


def write_cohort(folder: Path, n: int, seed: int = 1) -> pd.DataFrame:
    """Write `n` subjects (healthy and `t2dm` alternately; every third on the short design) as
    a dataset folder (observations.csv, subjects.csv, truth.csv). Returns the truth."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows, people, truth = [], [], []
    for i in range(n):
        subject, group = f"f{i}", ("healthy", "t2dm")[i % 2]
        times = LONG if i % 3 else SHORT
        basal = 5.0 if group == "healthy" else 7.5
        glucose = glucose_curve(times, basal, basal + 5.0 + 3.0 * rng.random())
        true = {
            "beta_cell_mass": float(np.exp(rng.normal(0.0, 0.3))) * (1.0, 0.5)[i % 2],
            "gk_s05": float(7.5 * np.exp(rng.normal(0.0, 0.1))),
        }
        model = mgjax.set_parameters(mgjax.preset(group), true)
        series = mgjax.GlucoseSeries(times, glucose)
        traj = mgjax.simulate_secretion(model, series, jnp.asarray(times))
        observed = {
            "glucose": (glucose, "mmol/L"),
            "insulin_secretion": (np.asarray(traj.secretion), "pmol/min"),
            "c_peptide": (np.asarray(traj.c_peptide), "pmol/L"),
        }
        for name, (values, unit) in observed.items():
            if name != "glucose":  # the input is taken as measured exactly
                values = values * (1.0 + 0.05 * rng.standard_normal(len(values)))
            for t, v in zip(times, values):
                rows.append((subject, "forced_glucose", t, "min", name, round(float(v), 4), unit))
        people.append((subject, group, 75.0, 175.0))
        truth += [(subject, k, v) for k, v in true.items()]
    columns = ["subject", "protocol", "time", "time_unit", "observable", "value", "unit"]
    pd.DataFrame(rows, columns=columns).to_csv(folder / "observations.csv", index=False)
    people_columns = ["subject", "group", "weight", "height"]
    pd.DataFrame(people, columns=people_columns).to_csv(folder / "subjects.csv", index=False)
    table = pd.DataFrame(truth, columns=["subject", "parameter", "value"])
    table.to_csv(folder / "truth.csv", index=False)
    return table


def _mgjax(*args) -> None:
    subprocess.run([sys.executable, "-m", "mgjax", *map(str, args)], check=True)


def per_subject(data: Path, out: Path, truth: pd.DataFrame) -> pd.DataFrame:
    """`mgjax fit` of every subject; estimates beside the truth (error in SEs)."""
    _mgjax("fit", "--data", data, "--free", ",".join(FREE), "--out", out, "--no-progress")
    table = pd.read_csv(out / "parameters.csv").merge(truth, on=["subject", "parameter"])
    table["error_in_se"] = (table["estimate"] - table["value"]) / table["se"]
    return table[["subject", "parameter", "value", "estimate", "se", "error_in_se"]]


def population(data: Path, out: Path) -> pd.DataFrame:
    """`mgjax population` (SAEM) of the cohort; estimates beside the simulated truth."""
    config = out.with_suffix(".yaml")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(textwrap.dedent(POPULATION))
    _mgjax("population", config, "--data", data, "--out", out)
    fixed = pd.read_csv(out / "population_parameters.csv")[["parameter", "estimate", "se"]]
    random = pd.read_csv(out / "random_effects.csv")
    random = pd.DataFrame(
        dict(
            parameter=[f"omega[{p}]" for p in random["parameter"]],
            estimate=random["omega_sd"],
            se=random["se"],
        )
    )
    table = pd.concat([fixed, random], ignore_index=True)
    truth = {
        "beta_cell_mass": 1.0,
        "gk_s05": 7.5,
        "beta_cell_mass~group=t2dm": float(np.log(0.5)),
        "omega[beta_cell_mass]": 0.3,
        "omega[gk_s05]": 0.1,
    }
    table.insert(1, "truth", table["parameter"].map(truth))
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/forced_glucose"))
    parser.add_argument("--population", action="store_true", help="also fit by SAEM")
    args = parser.parse_args(argv)
    data = args.out / "data"
    truth = write_cohort(data, args.subjects, args.seed)
    with pd.option_context("display.width", 120, "display.precision", 4):
        print(per_subject(data, args.out / "fit", truth).to_string(index=False))
        if args.population:
            print(population(data, args.out / "population").to_string(index=False))


if __name__ == "__main__":
    main()
