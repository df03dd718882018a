"""Recalibrate the presets jointly on every published number mgjax ships, and predict each
supplementation study's treatment effect from a calibration without that study's outcomes
(leave-one-study-out).

The published numbers: `mgjax/data/published_targets.csv` (each with its source). How each
study is simulated (preset, dose, visits) and which rows are not simulated (with the reason):
`mgjax/studies/_catalogue.py`. The calibration moves ten shared mechanism parameters (one factor
in every preset) and each preset's habitual Mg²⁺ intake, by MAP least squares with forward-mode
Jacobians (`mgjax.studies.StudyCalibration`). A left-out study keeps its baseline rows (they
describe the population before randomisation) and loses every number measured after it.

    python experiments/studies/calibrate_published.py     # ~7 min on a 2-core CPU

Writes `experiments/output/calibration/`: calibration.csv (every published number: shipped
presets, calibrated, within the reported spread), not_simulated.csv, effects.csv (published
effect ± 95 % half-width, leave-one-study-out prediction, within, ratio), factors.csv,
summary.json; and prints the tables as Markdown for docs/model.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mgjax.studies import StudyCalibration

OUT = Path(__file__).resolve().parents[1] / "output" / "calibration"


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    def fmt(v):
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "**no**"
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.{digits}g}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    studies = StudyCalibration()
    full = studies.calibrate()
    table = studies.calibration_table(full)
    loso = studies.leave_one_study_out(full=full)
    seconds = time.perf_counter() - start

    table.to_csv(OUT / "calibration.csv", index=False)
    studies.not_simulated.to_csv(OUT / "not_simulated.csv", index=False)
    loso.to_csv(OUT / "effects.csv", index=False)
    factors = pd.DataFrame(
        {"parameter": full.parameters, "factor": np.exp(full.u), "prior_sd_log": studies.prior_sd}
    )
    factors.to_csv(OUT / "factors.csv", index=False)

    judged = table[table["within_calibrated"].notna()]
    ratios = loso[loso["established"]]
    summary = dict(
        targets=len(table),
        not_simulated=len(studies.not_simulated),
        within_shipped=int(judged["within_shipped"].sum()),
        within_calibrated=int(judged["within_calibrated"].sum()),
        judged=len(judged),
        calibration_converged=full.converged,
        calibration_steps=full.steps,
        effects=len(loso),
        loso_within=int(loso["within_loso"].sum()),
        loso_within_fraction=float(loso["within_loso"].mean()),
        median_ratio_homa_ir=float(ratios[ratios.outcome == "homa_ir"]["ratio_loso"].median()),
        median_ratio_fasting_glucose=float(
            ratios[ratios.outcome == "fasting_glucose"]["ratio_loso"].median()
        ),
        refits_converged=bool(loso["refit_converged"].all()),
        seconds_total=seconds,
    )
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2))

    show = table.assign(
        time=[
            "" if np.isnan(t) else f"{t:g} {u}" for t, u in zip(table["time"], table["time_unit"])
        ]
    )[
        [
            "study",
            "arm",
            "time",
            "observable",
            "published",
            "spread",
            "unit",
            "shipped",
            "calibrated",
            "within_calibrated",
        ]
    ]
    print("## Calibration table\n")
    print(markdown(show))
    print("\n## Not simulated\n")
    print(markdown(studies.not_simulated[["study", "observable", "reason"]]))
    print("\n## Factors\n")
    print(markdown(factors))
    print("\n## Leave-one-study-out effects\n")
    print(
        markdown(
            loso[
                [
                    "study",
                    "outcome",
                    "kind",
                    "published",
                    "spread_95",
                    "established",
                    "loso",
                    "within_loso",
                    "ratio_loso",
                    "shipped",
                ]
            ]
        )
    )
    print("\n" + json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
