"""The population model: how each subject's parameters follow from the population's.

Individual coordinates of subject i (the structural problem's unconstrained coordinates u:
log θ for positive quantities, so effects multiply and random effects are log-normal):

    u_i = μ + Σ_c β_c·z_ic·e_{k(c)} + E·η_i,      η_i = L·ξ_i,   ξ_i ~ N(0, I),   Ω = L·Lᵀ,

μ the typical values, z_ic each covariate effect's design value (power: log(cov/reference);
linear: cov − reference; categorical: 1 for the effect's level, else 0), E the columns of the
random effects. The estimated vector θ = (μ, β, the free entries of L: log of its diagonal,
then — for `omega="full"` — its strictly lower entries row by row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Float


class CovariateEffect(eqx.Module):
    """One covariate's effect on one parameter.

    - `power`: θ ∝ (cov/reference)^β — continuous covariates (weight, age, BMI, eGFR);
    - `linear`: u shifts by β·(cov − reference) (θ ∝ e^{β·(cov − reference)});
    - `categorical`: θ ∝ e^β for subjects whose covariate equals `level` (group, sex)."""

    parameter: str = eqx.field(static=True)
    covariate: str = eqx.field(static=True)
    kind: str = eqx.field(static=True, default="power")  # power | linear | categorical
    reference: float | int = eqx.field(static=True, default=1.0)
    level: Any = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.kind not in ("power", "linear", "categorical"):
            raise ValueError(
                f"unknown covariate effect kind {self.kind!r}; use power, linear or categorical"
            )
        if self.kind == "power" and not self.reference > 0:
            raise ValueError(f"a power effect needs a positive reference, not {self.reference}")
        if self.kind == "categorical" and self.level is None:
            raise ValueError(f"the categorical effect of {self.covariate!r} needs a `level`")

    @property
    def name(self) -> str:
        """The coefficient's name in tables, e.g. `cl~weight` or `cl~sex=F`."""
        suffix = f"={self.level}" if self.kind == "categorical" else ""
        return f"{self.parameter}~{self.covariate}{suffix}"

    def design(self, values: pd.Series, source: str = "covariates") -> np.ndarray:
        """z for each subject (`values` of the covariate, in subject order)."""
        if self.kind == "categorical":
            return (values.astype(str) == str(self.level)).to_numpy(dtype=float)
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(x) | ((x <= 0) if self.kind == "power" else False)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{source}: covariate {self.covariate!r} of subject {values.index[k]!r} is "
                f"{values.iloc[k]}; a {self.kind} effect needs a "
                f"{'positive ' if self.kind == 'power' else ''}number for every subject"
            )
        return np.log(x / self.reference) if self.kind == "power" else x - self.reference


class PopulationModel(eqx.Module):
    """Which quantities of the structural problem (`names`, its coordinate order) carry a
    random effect (`random`), the covariate effects, and Ω's structure (`diagonal` or
    `full`). Quantities without a random effect are fixed effects shared by all subjects
    (e.g. the residual error's terms)."""

    names: tuple[str, ...] = eqx.field(static=True)
    random: tuple[str, ...] = eqx.field(static=True)
    covariates: tuple[CovariateEffect, ...] = eqx.field(static=True, default=())
    omega: str = eqx.field(static=True, default="diagonal")  # diagonal | full

    def __check_init__(self):
        unknown = [n for n in self.random if n not in self.names]
        unknown += [c.parameter for c in self.covariates if c.parameter not in self.names]
        if unknown:
            raise ValueError(
                f"population model: {sorted(set(unknown))} are not quantities of the "
                f"structural model; use some of {', '.join(self.names)}"
            )
        if len(set(self.random)) != len(self.random) or not self.random:
            raise ValueError("population model: `random` needs one or more distinct quantities")
        if self.omega not in ("diagonal", "full"):
            raise ValueError(f"omega {self.omega!r}: use 'diagonal' or 'full'")

    # --- sizes and names ------------------------------------------------------------------
    @property
    def n_random(self) -> int:
        return len(self.random)

    @property
    def n_omega(self) -> int:
        r = self.n_random
        return r if self.omega == "diagonal" else r * (r + 1) // 2

    @property
    def theta_names(self) -> tuple[str, ...]:
        """Names of θ's entries: μ of each quantity, β of each effect, then Ω's entries."""
        omega = [f"log_omega[{n}]" for n in self.random]
        if self.omega == "full":
            omega += [
                f"L[{self.random[i]},{self.random[j]}]"
                for i in range(self.n_random)
                for j in range(i)
            ]
        return tuple(self.names) + tuple(c.name for c in self.covariates) + tuple(omega)

    @property
    def random_index(self) -> np.ndarray:
        return np.array([self.names.index(n) for n in self.random])

    # --- θ ↔ (μ, β, L) --------------------------------------------------------------------
    def unpack(self, theta: Float[Array, " q"]) -> tuple[Array, Array, Array]:
        """(μ [p], β [c], L [r, r] lower triangular with a positive diagonal)."""
        p, c, r = len(self.names), len(self.covariates), self.n_random
        mu, beta, rest = theta[:p], theta[p : p + c], theta[p + c :]
        chol = jnp.diag(jnp.exp(rest[:r]))
        if self.omega == "full":
            rows, cols = np.tril_indices(r, -1)
            order = np.lexsort((cols, rows))  # row by row, as `theta_names`
            chol = chol.at[rows[order], cols[order]].set(rest[r:])
        return mu, beta, chol

    def pack(self, mu: Any, beta: Any, omega_sd: Any) -> Float[Array, " q"]:
        """θ from typical coordinates μ, coefficients β and the random effects' SDs (Ω
        diagonal at the start)."""
        extra = np.zeros(self.n_omega - self.n_random)
        return jnp.concatenate(
            [
                jnp.asarray(mu, dtype=jnp.float64),
                jnp.asarray(beta, dtype=jnp.float64).reshape(len(self.covariates)),
                jnp.log(jnp.asarray(omega_sd, dtype=jnp.float64)).reshape(self.n_random),
                jnp.asarray(extra),
            ]
        )

    def loading(self) -> np.ndarray:
        """[c, p]: which quantity each covariate effect acts on."""
        a = np.zeros((len(self.covariates), len(self.names)))
        for k, effect in enumerate(self.covariates):
            a[k, self.names.index(effect.parameter)] = 1.0
        return a

    def design(
        self, covariates: pd.DataFrame | Mapping[str, Any], subjects: Sequence[str]
    ) -> np.ndarray:
        """[n, c] design values z of every subject (rows of `covariates` indexed by subject,
        or a mapping covariate → values in subject order)."""
        if not self.covariates:
            return np.zeros((len(subjects), 0))
        if not isinstance(covariates, pd.DataFrame):
            covariates = pd.DataFrame(dict(covariates), index=list(subjects))
        missing = [c.covariate for c in self.covariates if c.covariate not in covariates]
        if missing:
            raise ValueError(
                f"covariates: no column {missing[0]!r} (columns: "
                f"{', '.join(map(str, covariates.columns))}); add it or drop the effect"
            )
        absent = [s for s in subjects if s not in covariates.index]
        if absent:
            raise ValueError(f"covariates: no row for subject(s) {absent[:5]}")
        rows = covariates.loc[list(subjects)]
        return np.stack([c.design(rows[c.covariate]) for c in self.covariates], axis=1)

    def individual(
        self, theta: Float[Array, " q"], z: Float[Array, " c"], xi: Float[Array, " r"]
    ) -> Float[Array, " p"]:
        """u_i for design values `z` and standardised random effects `xi` (η = L·ξ)."""
        mu, beta, chol = self.unpack(theta)
        shift = (jnp.asarray(z) * beta) @ jnp.asarray(self.loading())
        eta = chol @ xi
        return (mu + shift).at[jnp.asarray(self.random_index)].add(eta)
