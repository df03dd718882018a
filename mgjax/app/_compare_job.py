"""`mgjax compare`: named model variants fitted to the same data, compared by OFV, AIC, BIC, a
likelihood-ratio test where nested and cross-validated prediction error (`compare.csv`,
`report.html`)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..batch._build import subject_base_models
from ..data._dataset import Dataset
from ..fit._compare import Variant, compare_variants
from ._config import RunConfig
from ._html import page_head, section_html, table_html, write_page
from ._jobs import _load_fit_data, _resolve_fit
from ._resolve import base_model_for, error_models_for, priors_for
from ._run_dir import JobError, prepare_run_dir, remove_unfinished, start_log, write_run_header

#: Columns of the printed and reported hypothesis table.
TABLE_COLUMNS = (
    "variant",
    "ofv",
    "n_parameters",
    "aic",
    "delta_aic",
    "akaike_weight",
    "bic",
    "delta_bic",
    "cv_nll",
    "delta_cv_nll",
    "lrt_against",
    "lrt_statistic",
    "lrt_df",
    "lrt_p",
    "converged",
)
#: Columns printed by the command (the whole table is in compare.csv and report.html).
PRINTED_COLUMNS = (
    "variant",
    "ofv",
    "delta_aic",
    "akaike_weight",
    "delta_bic",
    "delta_cv_nll",
    "lrt_p",
)


def _subject_models(cfg: RunConfig, dataset: Dataset):
    """The subject id → its base model (group preset, covariates, therapies, parameters)."""
    lookup = subject_base_models(dataset, base_model_for(cfg))
    return lambda subject: lookup(subject)[1]


def compare_job(cfg: RunConfig, out: Path, *, data: Path | None = None, force: bool = False):
    """Fit `compare.variants` to the data; write `compare.csv`, `report.html` and the run log.
    Returns the table."""
    if len(cfg.compare.variants) < 2:
        raise JobError(
            "compare.variants: name at least two model variants, e.g. "
            "{default: {}, insulin_raises_excretion: {parameters: {trpm6_insulin_coupling: -3}}}"
        )
    cfg, _ = _resolve_fit(cfg, data, None)
    priors = priors_for(cfg)
    dataset = _load_fit_data(cfg)
    observables = sorted(dataset.observations["observable"].unique())
    variants = [
        Variant(name, dict(v.parameters), tuple(v.free)) for name, v in cfg.compare.variants.items()
    ]
    created = not Path(out).exists()
    out = prepare_run_dir(Path(out), force=force)
    try:
        write_run_header(out, cfg)
        log = start_log(out)
        log.info("compare: %d variants on %s", len(variants), cfg.data.path)
        t0 = time.perf_counter()
        table = compare_variants(
            dataset,
            variants,
            cfg.fit.free,
            base_model=_subject_models(cfg, dataset),
            error_models=error_models_for(cfg, observables),
            priors=priors,
            folds=cfg.compare.folds,
            pooled=cfg.compare.pooled,
            method=cfg.optimiser.name,
            max_steps=cfg.optimiser.max_steps,
        )
        table.to_csv(out / "compare.csv", index=False)
        log.info("compare: done in %.1f s", time.perf_counter() - t0)
        _report(out, cfg, table)
        return table
    except BaseException:
        if created:
            remove_unfinished(out)
        raise


def _report(out: Path, cfg: RunConfig, table: pd.DataFrame) -> None:
    best = table.iloc[0]
    lines = [
        f"Best by AIC: <b>{best['variant']}</b> (Akaike weight {best['akaike_weight']:.2f}). "
        "ΔAIC < 2: the data do not prefer one variant; 2–10: some to strong support; > 10: "
        "decisive. cv_nll is the held-out negative log-likelihood over "
        f"{cfg.compare.folds} folds (lower predicts better). OFV = −2 log-likelihood with all "
        "constants; priors shape the fits but are not in the OFV."
    ]
    variants = pd.DataFrame(
        [
            dict(variant=name, parameters=dict(v.parameters), extra_free=list(v.free))
            for name, v in cfg.compare.variants.items()
        ]
    )
    parts = page_head("mgjax compare", "Rival hypotheses decided by data")
    parts += section_html("Verdict", f"<p>{lines[0]}</p>")
    parts += section_html("Hypothesis table", table_html(table[list(TABLE_COLUMNS)]))
    parts += section_html("Variants", table_html(variants))
    write_page(out / "report.html", parts)
