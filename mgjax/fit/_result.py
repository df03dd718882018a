"""The result of a fit: estimates, standard errors, intervals, loss history, convergence flags
and diagnostics, as tables and files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..model._parameters import parameter_infos


@dataclass
class FitResult:
    """Estimates with uncertainty for one subject (or one pooled dataset)."""

    names: tuple[str, ...]
    estimates: np.ndarray
    se: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    identifiable: np.ndarray
    precise: np.ndarray
    correlation: np.ndarray
    loss: float
    history: np.ndarray
    iterations: int
    converged: bool
    solve_success: bool
    method: str
    seconds: float
    eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros(0))
    directions: list = field(default_factory=list)
    multistart: pd.DataFrame | None = None
    subject: str = ""
    u: np.ndarray = field(default_factory=lambda: np.zeros(0))
    shrinkage: np.ndarray | None = None  # posterior SD / prior SD (NaN: no prior)

    @property
    def status(self) -> str:
        if not self.solve_success:
            return "solve_failed"
        return "converged" if self.converged else "max_steps"

    def to_dataframe(self) -> pd.DataFrame:
        """One row per free quantity: estimate, se, 95 % interval, unit, identifiable (SE ≤ 50 %
        in optimisation coordinates; with a prior, also shrunk to ≤ half the prior SD), precise
        (SE ≤ 5 %), prior_shrinkage (posterior SD / prior SD)."""
        infos = parameter_infos()
        shrinkage = (
            self.shrinkage if self.shrinkage is not None else np.full(len(self.names), np.nan)
        )
        return pd.DataFrame(
            dict(
                subject=self.subject,
                parameter=list(self.names),
                estimate=self.estimates,
                se=self.se,
                ci_low=self.ci_low,
                ci_high=self.ci_high,
                unit=[infos[n].unit if n in infos else "model units" for n in self.names],
                identifiable=self.identifiable,
                precise=self.precise,
                prior_shrinkage=shrinkage,
            )
        )

    def correlation_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.correlation, index=list(self.names), columns=list(self.names))

    def summary(self) -> dict[str, Any]:
        return dict(
            subject=self.subject,
            loss=self.loss,
            converged=self.converged,
            status=self.status,
            iterations=self.iterations,
            method=self.method,
            seconds=self.seconds,
            not_identifiable=[n for n, ok in zip(self.names, self.identifiable) if not ok],
            fisher_eigenvalues=[float(v) for v in self.eigenvalues],
            weakest_directions=self.directions[:3],
            loss_history=[float(v) for v in self.history if np.isfinite(v)],
        )

    def save(self, directory: str | Path) -> Path:
        """Write parameters.csv/.parquet, correlations.csv, multistart.csv and summary.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        frame = self.to_dataframe()
        frame.to_csv(directory / "parameters.csv", index=False)
        frame.to_parquet(directory / "parameters.parquet", index=False)
        self.correlation_frame().to_csv(directory / "correlations.csv")
        if self.multistart is not None:
            self.multistart.to_csv(directory / "multistart.csv", index=False)
        (directory / "summary.json").write_text(json.dumps(self.summary(), indent=2, default=float))
        return directory
