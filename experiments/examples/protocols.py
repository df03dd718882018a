"""Every protocol on the three presets (healthy / T2DM / T2DM + hypomagnesaemia): one PNG per
protocol and the summary numbers, next to the published values they should reproduce.

    python experiments/examples/protocols.py [--out experiments/output/protocols] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd

import mgjax
from mgjax.data import published

#: one compilation per protocol structure, shared by the presets (same PyTree structure)
simulate = eqx.filter_jit(mgjax.simulate)

PRESETS = ("healthy", "t2dm", "t2dm_hypomagnesemia")
COLORS = dict(healthy="tab:green", t2dm="tab:orange", t2dm_hypomagnesemia="tab:red")
RM_DOSE_MMOL = 637.0 / 24.305  # 2.5 g MgCl₂/day, Rodríguez-Morán 2003


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(out, name, title, runs, keys, xlabel="min", xscale=1.0):
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    for ax, (key, label) in zip(np.atleast_1d(axes), keys):
        for preset, (ts, values) in runs.items():
            for style, series in values.get(key, {}).items():
                ax.plot(
                    ts / xscale,
                    series,
                    style,
                    color=COLORS[preset],
                    label=f"{preset} {label if style == '-' else ''}".strip(),
                )
        ax.set_title(label)
        ax.set_xlabel(xlabel)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


HEC_SUMMARY = (
    "m_value",
    "steady_state_insulin_uu_ml",
    "m_over_i",
    "max_glucose_deviation_after_30_min",
)


def _hec_row(protocol: str, preset: str, summary: dict, *extra: str) -> dict:
    """One table row of a hyperinsulinaemic clamp: its M value, insulin and M/I (+ `extra`)."""
    return dict(
        protocol=protocol, preset=preset, **{k: float(summary[k]) for k in HEC_SUMMARY + extra}
    )


def clamps(out):
    rows, runs_hec, runs_hgc, runs_iv = [], {}, {}, {}
    hec = mgjax.HyperinsulinemicClamp(insulin_rate=1.0, per_kg=True, target_glucose=5.0)
    isoglycaemic = mgjax.HyperinsulinemicClamp(insulin_rate=1.0, per_kg=True)
    hgc = mgjax.HyperglycemicClamp()
    ivgtt = mgjax.IVGTT()
    for preset in PRESETS:
        model = mgjax.preset(preset)
        t = jnp.arange(0.0, 120.5, 1.0)
        traj = simulate(model, hec, t)
        rows.append(_hec_row("HEC 1 mU/kg/min @ 5 mmol/L", preset, hec.summary(traj)))
        rows.append(
            _hec_row(
                "HEC 1 mU/kg/min, isoglycaemic (own fasting glucose)",
                preset,
                isoglycaemic.summary(simulate(model, isoglycaemic, t)),
                "target_glucose",
            )
        )
        runs_hec[preset] = (
            np.asarray(t),
            {
                "glucose": {"-": traj["glucose"]},
                "insulin": {"-": traj["insulin"]},
                "glucose_infusion": {"-": traj["glucose_infusion"]},
            },
        )
        traj = simulate(model, hgc, t)
        s = {k: float(v) for k, v in hgc.summary(traj).items()}
        rows.append(dict(protocol="hyperglycaemic clamp +6.9 mmol/L", preset=preset, **s))
        runs_hgc[preset] = (
            np.asarray(t),
            {
                "glucose": {"-": traj["glucose"]},
                "insulin": {"-": traj["insulin"]},
                "c_peptide": {"-": traj["c_peptide"]},
                "insulin_secretion": {"-": traj["insulin_secretion"]},
            },
        )
        tv = jnp.linspace(0.0, 180.0, 361)
        traj = simulate(model, ivgtt, tv)
        s = {k: float(v) for k, v in ivgtt.summary(traj).items()}
        rows.append(dict(protocol="insulin-modified FSIVGTT", preset=preset, **s))
        runs_iv[preset] = (
            np.asarray(tv),
            {"glucose": {"-": traj["glucose"]}, "insulin": {"-": traj["insulin"]}},
        )
    paths = [
        _panels(
            out,
            "hyperinsulinemic_clamp",
            "Hyperinsulinaemic–euglycaemic clamp, 1 mU/kg/min, target 5 mmol/L",
            runs_hec,
            [
                ("glucose", "glucose (mmol/L)"),
                ("insulin", "insulin (pmol/L)"),
                ("glucose_infusion", "GIR (mg/kg/min)"),
            ],
        ),
        _panels(
            out,
            "hyperglycemic_clamp",
            "Hyperglycaemic clamp, +6.9 mmol/L",
            runs_hgc,
            [
                ("glucose", "glucose (mmol/L)"),
                ("insulin", "insulin (pmol/L)"),
                ("c_peptide", "C-peptide (pmol/L)"),
                ("insulin_secretion", "ISR (pmol/min)"),
            ],
        ),
        _panels(
            out,
            "ivgtt",
            "Insulin-modified FSIVGTT (0.3 g/kg glucose; 0.03 U/kg insulin at 20 min)",
            runs_iv,
            [("glucose", "glucose (mmol/L)"), ("insulin", "insulin (pmol/L)")],
        ),
    ]
    return rows, paths


def trial(out, quick=False):
    weeks = 4 if quick else 16
    protocol = mgjax.OralMagnesiumTrial.daily(RM_DOSE_MMOL, weeks, salt="chloride")
    fine = jnp.arange(0.0, weeks * 7 + 0.5) * 1440.0  # every morning, fasting, before the dose
    rows, runs = [], {}
    for preset in PRESETS:
        model = mgjax.preset(preset)
        values = {}
        for arm, p, style in [("magnesium", protocol, "-"), ("placebo", protocol.placebo(), "--")]:
            s = p.summary(simulate(model, p, p.sampling_times()))
            traj = simulate(model, p, fine)
            for k in ["serum_mg", "glucose", "homa_ir", "hba1c"]:
                values.setdefault(k, {})[style] = traj[k]
            rows.append(
                dict(
                    protocol=f"MgCl₂ {RM_DOSE_MMOL:.1f} mmol/day × {weeks} wk",
                    preset=preset,
                    arm=arm,
                    **{
                        f"week{weeks}_{k}": float(np.asarray(v)[-1])
                        for k, v in s.items()
                        if k != "visit_day"
                    },
                    **{
                        f"week0_{k}": float(np.asarray(v)[0])
                        for k, v in s.items()
                        if k in ("serum_mg", "glucose", "homa_ir")
                    },
                )
            )
        runs[preset] = (np.asarray(fine), values)
    path = _panels(
        out,
        "mg_trial",
        f"Oral MgCl₂ {RM_DOSE_MMOL:.1f} mmol/day (solid) vs placebo (dashed)",
        runs,
        [
            ("serum_mg", "serum Mg²⁺ (mmol/L)"),
            ("glucose", "fasting glucose (mmol/L)"),
            ("homa_ir", "HOMA-IR"),
            ("hba1c", "HbA1c (%)"),
        ],
        xlabel="day",
        xscale=1440.0,
    )
    return rows, [path]


def forced_secretion(out):
    hgc = mgjax.HyperglycemicClamp()
    ts = jnp.arange(0.0, 120.5, 0.5)
    driver = simulate(mgjax.preset("healthy"), hgc, ts)
    glucose = mgjax.GlucoseSeries(ts, driver["glucose"])
    rows, runs = [], {}
    for preset in PRESETS:
        sec = eqx.filter_jit(mgjax.simulate_secretion)(mgjax.preset(preset), glucose, ts)
        isr = np.asarray(sec.secretion_per_m2)
        first, second = np.asarray(ts) <= 10, np.asarray(ts) > 10
        rows.append(
            dict(
                protocol="forced glucose (healthy HGC glucose)",
                preset=preset,
                isr_first_phase_pmol_min_m2=isr[first].mean(),
                isr_second_phase_pmol_min_m2=isr[second].mean(),
            )
        )
        runs[preset] = (np.asarray(ts), {"isr": {"-": isr}, "glucose": {"-": sec.glucose}})
    path = _panels(
        out,
        "forced_secretion",
        "Beta-cell driven by the same measured glucose series",
        runs,
        [("glucose", "forcing glucose (mmol/L)"), ("isr", "ISR (pmol/min/m²)")],
    )
    return rows, [path]


def main(out: Path = Path("experiments/output/protocols"), quick: bool = False) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    frames, paths = [], []
    for make in (clamps, lambda o: trial(o, quick), forced_secretion):
        rows, p = make(out)
        frames.append(pd.DataFrame(rows))
        paths += p
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        for frame in frames:
            for protocol, group in frame.groupby("protocol", sort=False):
                print(f"\n== {protocol}")
                print(
                    group.drop(columns="protocol")
                    .dropna(axis=1, how="all")
                    .round(3)
                    .to_string(index=False)
                )
    print("\nPublished, for comparison:")
    for study, arm, obs in [
        ("diabetes_2001_50_1449", "ngt", "m_value"),
        ("diabetes_2001_50_1449", "t2dm", "m_value"),
        ("minimal_model_review", "normal", "air_g"),
        ("minimal_model_review", "t2dm", "air_g"),
    ]:
        r = published(study, arm, obs)
        print(f"  {study} {arm} {obs}: {r['value']} ± {r['spread']} {r['unit']} ({r['source']})")
    for arm in ["magnesium", "placebo"]:
        vals = {
            k: published("rodriguez_moran_2003", arm, k, 16)["value"]
            for k in ["serum_mg", "fasting_glucose", "homa_ir", "hba1c"]
        }
        base = published("rodriguez_moran_2003", arm, "fasting_glucose", 0)["value"]
        print(f"  Rodríguez-Morán 2003 {arm}: week 16 {vals}; baseline fasting glucose {base}")
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(out / "summary.csv", index=False)
    print("\nwrote", ", ".join(str(p) for p in paths), "and", out / "summary.csv")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/output/protocols"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    main(args.out, args.quick)
