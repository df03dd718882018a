"""Rodas4: an L-stable, stiffly accurate Rosenbrock method of order 4(3), as a Diffrax solver.

Diffrax's implicit solvers (Kvaerno*, KenCarp*) solve nonlinear stage equations with Newton
iterations inside nested while-loops. For a small stiff system such as this model (20 states)
that machinery costs far more than the arithmetic, in run time and in compile time. A
Rosenbrock method is linearly implicit: one Jacobian (forward-mode AD), one LU factorisation
and six triangular solves per step, no iteration — so a step is a straight-line program.

Coefficients: Hairer & Wanner, *Solving Ordinary Differential Equations II*, 2nd ed. (1996),
§IV.7, method RODAS (the transformed "u_i" form of their Fortran code, with its dense-output
coefficients). The method is stiffly accurate; the error estimate is the last stage increment.

Stage equations, with W = I/(h·γ) − J:

    W·u_i = f(t + c_i·h, y + Σ_j a_ij·u_j) + Σ_j (C_ij/h)·u_j + h·d_i·∂f/∂t
    y_1 = y + Σ_j a_6j·u_j + u_6    (so the embedded 3rd-order solution is y_1 − u_6)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jax.flatten_util import ravel_pytree

_GAMMA = 0.25
_A = (
    (),
    (1.544,),
    (0.9466785280815826, 0.2557011698983284),
    (3.314825187068521, 2.896124015972201, 0.9986419139977817),
    (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.687886036105895),
)
_C = (
    (),
    (-5.6688,),
    (-2.430093356833875, -0.2063599157091915),
    (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
    (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.7089089320616),
    (
        8.083246795921522,
        -7.981132988064893,
        -31.52159432874371,
        16.31930543123136,
        -6.058818238834054,
    ),
)
_STAGE_TIMES = (0.0, 0.386, 0.21, 0.63, 1.0, 1.0)
_D = (0.25, -0.1043, 0.1035, -0.0362, 0.0, 0.0)
_DENSE = (
    (
        10.12623508344586,
        -7.487995877610167,
        -34.80091861555747,
        -7.992771707568823,
        1.025137723295662,
    ),
    (
        -0.6762803392801253,
        6.087714651680015,
        16.43084320892478,
        24.76722511418386,
        -6.594389125716872,
    ),
)


class Rodas4Interpolation(dfx.AbstractLocalInterpolation):
    """Rodas4's own 3rd-order dense output:
    y(θ) = (1 − θ)·y0 + θ·(y1 + (1 − θ)·(K1 + θ·K2)),  θ = (t − t0)/(t1 − t0)."""

    t0: Any
    t1: Any
    y0: Any
    y1: Any
    k: Any  # (2, n) dense-output combinations, flat

    def evaluate(self, t0, t1=None, left: bool = True):
        del left
        if t1 is not None:
            return _sub(self.evaluate(t1), self.evaluate(t0))
        span = self.t1 - self.t0
        theta = (t0 - self.t0) / jnp.where(span == 0, 1.0, span)  # zero span: finished lane
        flat0, unravel = ravel_pytree(self.y0)
        flat1, _ = ravel_pytree(self.y1)
        out = (1 - theta) * flat0 + theta * (flat1 + (1 - theta) * (self.k[0] + theta * self.k[1]))
        return unravel(out)


def _sub(a, b):
    return jax.tree.map(lambda x, y: x - y, a, b)


def _tableau():
    """Full 6×6 stage matrices (lower triangular) and the solution weights."""
    a = np.zeros((6, 6))
    c = np.zeros((6, 6))
    for i, row in enumerate(_A):
        a[i, : len(row)] = row
    a[5, :4] = a[4, :4]
    a[5, 4] = 1.0  # stage 6 is evaluated at the stage-5 point plus u_5
    for i, row in enumerate(_C):
        c[i, : len(row)] = row
    weights = a[5].copy()
    weights[5] = 1.0  # y1 = stage-6 point + u_6
    return a, c, weights


_A_FULL, _C_FULL, _WEIGHTS = _tableau()


class Rodas4(dfx.AbstractAdaptiveSolver):
    """Rodas4 (Hairer & Wanner): L-stable, stiffly accurate Rosenbrock method of order 4 with an
    embedded order-3 error estimate and 3rd-order dense output. Exact Jacobians by forward-mode
    automatic differentiation; no nonlinear iterations. For ODEs (`diffrax.ODETerm`).

    - `time_dependent`: include the ∂f/∂t terms of non-autonomous systems (one extra JVP per
      step). Protocols whose inputs are piecewise constant between declared jump times are
      autonomous within each step and can set it to False.
    - `unroll_stages`: trace the six stages one by one (faster steps) instead of as a loop over
      stages (the vector field is traced once: smaller programs, faster compilation, notably of
      reverse-mode gradients).
    - `sensitivities`: how derivatives of the solution (`jax.jvp`, `jax.jacfwd`, `jax.grad`)
      pass through a step. `"exact"`: the derivative of the computed solution, the step's
      Jacobian ∂f/∂y differentiated too (second derivatives of f every step). `"staggered"`:
      the step's Jacobian held constant, so tangents are the same Rosenbrock scheme applied to
      the forward sensitivity equations s' = J·s + ∂f/∂θ with the state's own matrix W (the
      idea of CVODES's staggered direct method: the sensitivities reuse the state's Newton
      matrix). No second derivatives — Levenberg–Marquardt's forward-mode Jacobians ~18 %
      cheaper — but a W-method approximation of lower order, not the exact derivative of the
      discrete solution (on the batch benchmark's clamp: within 1.2e-3 of each Jacobian
      column's largest entry, median 1e-7). `"auto"` (default): exact, except in the
      Jacobians of Levenberg–Marquardt's iterations (`mgjax.fit`, `mgjax.batch`), which use
      staggered (`mgjax.solve.for_jacobians`); standard errors from `mgjax.fit.laplace` stay exact.
    """

    term_structure: ClassVar = dfx.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., Rodas4Interpolation]] = Rodas4Interpolation
    time_dependent: bool = eqx.field(default=True, static=True)
    unroll_stages: bool = eqx.field(default=False, static=True)
    sensitivities: Literal["auto", "exact", "staggered"] = eqx.field(default="auto", static=True)

    def __check_init__(self):
        if self.sensitivities not in ("auto", "exact", "staggered"):
            raise ValueError(
                f"Rodas4(sensitivities={self.sensitivities!r}): use 'auto', 'exact' or 'staggered'"
            )

    def order(self, terms):
        return 4

    def error_order(self, terms):
        return 4

    def init(self, terms, t0, t1, y0, args):
        return None

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        flat_y0, unravel = ravel_pytree(y0)
        # under vmap a finished lane keeps stepping with t0 == t1; its result is discarded, but
        # reverse mode multiplies the (zero) cotangent by 1/h: keep h finite there
        h = t1 - t0
        h = jnp.where(h == 0, 1e-3, h)
        dtype = flat_y0.dtype

        def f(t, y_flat):
            return ravel_pytree(terms.vf(t, unravel(y_flat), args))[0]

        f0, jac = _value_and_jacobian(f, t0, flat_y0)
        if self.sensitivities == "staggered":  # tangents see W's state Jacobian as constant
            jac = jax.lax.stop_gradient(jac)
        if self.time_dependent:
            f_t = jax.jvp(lambda t: f(t, flat_y0), (t0,), (jnp.ones_like(t0),))[1]
        else:
            f_t = jnp.zeros_like(flat_y0)
        n = flat_y0.shape[0]
        w = jnp.eye(n, dtype=dtype) / (h * _GAMMA) - jac
        lu = jsl.lu_factor(jax.lax.stop_gradient(w))
        a = jnp.asarray(_A_FULL, dtype=dtype)
        c = jnp.asarray(_C_FULL, dtype=dtype) / h
        d = jnp.asarray(_D, dtype=dtype) * h
        times = t0 + jnp.asarray(_STAGE_TIMES, dtype=dtype) * h

        def stage(i, u, f_i):
            rhs = f_i + c[i] @ u + d[i] * f_t
            return u.at[i].set(_solve(w, lu, rhs))

        u = jnp.zeros((6, n), dtype=dtype)
        u = stage(0, u, f0)
        if self.unroll_stages:
            for i in range(1, 6):
                u = stage(i, u, f(times[i], flat_y0 + a[i] @ u))
        else:
            u = jax.lax.fori_loop(
                1, 6, lambda i, u: stage(i, u, f(times[i], flat_y0 + a[i] @ u)), u
            )
        flat_y1 = flat_y0 + jnp.asarray(_WEIGHTS, dtype=dtype) @ u
        # a step into a region where the vector field is not finite is rejected with an
        # infinite error, so the controller shrinks the step (down to dtmin, then fails)
        error = jnp.where(jnp.all(jnp.isfinite(flat_y1)), u[5], jnp.inf)
        k = jnp.asarray(_DENSE, dtype=dtype) @ u[:5]
        y1 = unravel(flat_y1)
        dense_info = dict(y0=y0, y1=y1, k=k)
        return y1, unravel(error), dense_info, None, dfx.RESULTS.successful


@jax.custom_jvp
def _solve(w, lu, b):
    """W⁻¹·b with W's LU factors `lu` (computed from W without tangents).

    Differentiating through `lu_factor` itself is slow: JAX's LU derivative rule costs
    ~150× a primal step under `jax.jacfwd` (measured on a 9-state model with 22 parameters:
    15.8 ms vs 0.1 ms). Here the derivative is that of the solution, d(W⁻¹b) = W⁻¹(db − dW·x),
    reusing the same factors — linear in the tangents, so reverse mode transposes it, and
    written with `_solve` itself, so second derivatives are exact."""
    return jsl.lu_solve(lu, b)


@_solve.defjvp
def _solve_jvp(primals, tangents):
    w, lu, b = primals
    dw, _, db = tangents
    # through `_solve` again, so higher derivatives (Hessians) see W's dependence too
    x = _solve(w, lu, b)
    return x, _solve(w, lu, db - dw @ x)


def _value_and_jacobian(f, t, y):
    """f(t, y) and ∂f/∂y by forward mode (one pass, columns vectorised)."""
    n = y.shape[0]

    def push(v):
        return jax.jvp(lambda yy: f(t, yy), (y,), (v,))

    values, columns = jax.vmap(push, out_axes=(None, 1))(jnp.eye(n, dtype=y.dtype))
    return values, columns
