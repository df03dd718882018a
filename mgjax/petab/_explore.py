"""Exploring a fit's flat directions: the practically non-identifiable parameter combinations
along which the NLLH hardly changes, and along which a local optimiser has nothing to follow.

At Brannmark_JBC2010's published nominal point two eigenvalues of the Gauss–Newton Hessian
are ~1e-14 and ~3e-10 against 2.9e4 (k1g alone; k21 up with k22 down, the product that sets
IRS1 phosphorylation by the internalised receptor kept): the NLLH stays within 0.002 of
141.889 along the second while k21 rises three decades, then the route through the surface
receptor (k21) starts to matter, and a local fit from the edge of that flat region goes
down to the best known optimum, 141.825. Local fits from random starts stop anywhere on such
a plateau; this walks each flat direction to where the NLLH has risen by `rise` and fits
again from there, a cheap version of following the profile likelihood of that combination
(as Data2Dynamics and PESTO report when a profile finds a better optimum).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from ._fides import RESTART_TOLERANCE, _compiled, fit_start


class Exploration(NamedTuple):
    """The end point of `explore_flat_directions` on the PEtab scale, its NLLH, the local
    fits it ran and their iterations, and the NLLH after each round that lowered it."""

    scaled: np.ndarray
    nllh: float
    fits: int
    iterations: int
    trail: tuple[float, ...]

    @property
    def rounds(self) -> int:
        """The rounds that lowered the NLLH."""
        return len(self.trail)


def _curvature(problem, scaled: np.ndarray) -> np.ndarray:
    """The NLLH's curvature on the PEtab scale (per scale unit²): Gauss–Newton JᵀJ of the
    residuals for least-squares problems, else the exact Hessian (forward over forward)."""
    residuals_and_jacobian, _, _ = _compiled()
    if problem.least_squares:
        _, jacobian = residuals_and_jacobian(problem, scaled)
        jacobian = np.asarray(jacobian)
        return jacobian.T @ jacobian
    return np.asarray(_hessian()(problem, scaled))


@functools.cache
def _hessian():
    """The compiled exact Hessian of the NLLH on the PEtab scale."""
    import equinox as eqx
    import jax

    return eqx.filter_jit(
        lambda problem, x: jax.jacfwd(
            jax.jacfwd(type(problem).negative_log_likelihood_on_scale, 1), 1
        )(problem, x)
    )


def flat_directions(problem, scaled: Any, count: int) -> list[np.ndarray]:
    """The `count` unit directions of least curvature at `scaled` (eigenvectors of the
    curvature, smallest eigenvalue first), in the coordinates that are not on a bound (the
    others keep their value)."""
    x = np.asarray(scaled, dtype=float)
    lower, upper = (np.asarray(b, dtype=float) for b in problem.bounds_on_scale())
    margin = 1e-9 * (upper - lower)
    inside = (x > lower + margin) & (x < upper - margin)
    if not inside.any():
        return []
    curvature = _curvature(problem, x)[np.ix_(inside, inside)]
    _, vectors = np.linalg.eigh(0.5 * (curvature + curvature.T))
    directions = []
    for j in range(min(count, vectors.shape[1])):
        v = np.zeros_like(x)
        v[inside] = vectors[:, j]
        directions.append(v)
    return directions


def edge_of_flat_region(
    problem,
    scaled: Any,
    nllh: float,
    direction: np.ndarray,
    *,
    rise: float,
    step: float,
    max_distance: float,
    resolution: float | None = None,
) -> tuple[np.ndarray, float] | None:
    """Walk from `scaled` along `direction` in steps of `step` (scale units, clipped to the
    bounds) while the NLLH stays ≤ `nllh` + `rise`, then through the step where it rose in
    steps of `resolution` (default `step`); the last point within and its NLLH, or None when
    none is (or every coordinate it moves is on its bound)."""
    _, _, evaluate = _compiled()
    lower, upper = (np.asarray(b, dtype=float) for b in problem.bounds_on_scale())
    x = np.asarray(scaled, dtype=float)

    def walk(t0: float, size: float, stop: float):
        """Points t0 + size, t0 + 2·size, … ≤ stop: the last within, and whether one rose."""
        last, previous = None, np.clip(x + t0 * direction, lower, upper)
        for t in np.arange(t0 + size, stop + 0.5 * size, size):
            point = np.clip(x + t * direction, lower, upper)
            if np.allclose(point, previous, rtol=0.0, atol=1e-12):
                return last, False  # every coordinate it moves is on its bound
            value, ok = evaluate(problem, point)
            value = float(value)
            if not (bool(ok) and np.isfinite(value) and value <= nllh + rise):
                return last, True
            last, previous = (t, point, value), point
        return last, False

    coarse, rose = walk(0.0, step, max_distance)
    edge = coarse
    fine = resolution if resolution is not None else step
    if rose and fine < step:
        t0 = coarse[0] if coarse is not None else 0.0
        refined, _ = walk(t0, fine, t0 + step - 0.5 * fine)
        edge = refined if refined is not None else coarse
    return None if edge is None else (edge[1], edge[2])


def explore_flat_directions(
    problem,
    scaled: Any,
    nllh: float,
    *,
    directions: int = 3,
    rise: float = 1.0,
    step: float = 0.5,
    resolution: float = 0.1,
    max_distance: float = 12.0,
    min_distance: float = 0.3,
    rounds: int = 8,
    max_fits: int = 20,
    tolerance: float = RESTART_TOLERANCE,
    **fit_options: Any,
) -> Exploration:
    """Look for a lower optimum along the flat directions of the fit at `scaled` (PEtab
    scale, NLLH `nllh`).

    Each round takes the `directions` directions of least curvature (`flat_directions`,
    flattest first) and walks each way along them to the edge of the flat region
    (`edge_of_flat_region`: the NLLH within `rise` of the current point, in steps of `step`
    refined to `resolution` where it rose, up to `max_distance` scale units — decades for
    log10 parameters). From the first edge at least `min_distance` away whose local fit
    (`fit_start` with `fit_options`) lowers the NLLH by ≥ `tolerance`, the next round
    starts; a round without one ends the search (at most `rounds` rounds and `max_fits`
    fits). Taking the first improvement rather than the best of a round halved the fits on
    Brannmark's plateau points; edges resolved to 0.1 and 0.3 away finish in its narrow
    valley next to the optimum (docs/petab.md).
    """
    x = np.asarray(scaled, dtype=float)
    value = float(nllh)
    fits, iterations, trail = 0, 0, []
    for _ in range(rounds):
        moved = False
        candidates = (
            sign * direction
            for direction in flat_directions(problem, x, directions)
            for sign in (1.0, -1.0)
        )
        for direction in candidates:
            if fits >= max_fits:
                break
            edge = edge_of_flat_region(
                problem,
                x,
                value,
                direction,
                rise=rise,
                step=step,
                max_distance=max_distance,
                resolution=resolution,
            )
            if edge is None or np.linalg.norm(edge[0] - x) < min_distance:
                continue
            fit = fit_start(problem, edge[0], **fit_options)
            fits, iterations = fits + 1, iterations + fit.iterations
            if value - fit.nllh >= tolerance:
                x, value, moved = fit.scaled, fit.nllh, True
                trail.append(value)
                break
        if not moved:
            break
    return Exploration(
        scaled=x,
        nllh=value,
        fits=fits,
        iterations=iterations,
        trail=tuple(trail),
    )
