"""A PEtab v1 problem as a `FitProblem`-like PyTree: the same coordinates, residuals and
likelihood methods the fitting engine calls, so `mgjax.fit.fit`, `multistart`, `laplace` and
`profile_likelihood` run on it unchanged.

Semantics follow the reference library (`petab.v1.calculate_llh`):

- every estimated parameter is optimised within its bounds on its PEtab scale (log10/log:
  log θ = log lb + (log ub − log lb)·sigmoid(u); lin: θ = lb + (ub − lb)·sigmoid(u));
- per simulation condition, model parameters come from the condition table (a number or a
  parameter id), else from the parameter table, else from the SBML model; species named in
  the condition table get that initial value;
- with a pre-equilibration condition, the model is first brought to steady state under it;
  the simulation then starts from that state (species set by the simulation condition reset);
- observables and noise formulas with per-measurement `observableParameters` /
  `noiseParameters` overrides; lin/log/log10 transformations; normal and Laplace noise;
- the negative log-likelihood includes its constant terms, e.g. for normal noise on a log10
  scale ½·log(2π σ² m² ln(10)²) + ½·((log10 s − log10 m)/σ)²; priors from the parameter table
  (`objectivePriorType`) are added to the objective of a fit.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..fit._problem import AbstractFitProblem
from ..solve._solve import SolverOptions, integrate

#: Residual given to each measurement of a failed simulation (in standard deviations).
FAILED_RESIDUAL = 1e3
#: Offset C of the noise residual √(2·log σ + C): ½·Σ r² then equals the negative
#: log-likelihood up to constants, so Levenberg–Marquardt also fits noise parameters
#: (Raue et al., PLoS One 2013). Valid for σ > exp(−C/2) = 1e−43.
NOISE_RESIDUAL_OFFSET = 200.0
LOG_2PI = math.log(2.0 * math.pi)
LN10 = math.log(10.0)
SCALES = ("lin", "log", "log10")
PRIOR_TYPES = (
    "none",
    "normal",
    "laplace",
    "logNormal",
    "logLaplace",
    "parameterScaleNormal",
    "parameterScaleLaplace",
    "uniform",
    "parameterScaleUniform",
)


class PetabModel(eqx.Module):
    """The generated functions of one SBML model + PEtab observables (static: one compile per
    model structure)."""

    rhs: Any = eqx.field(static=True)  # (time, x, p) -> dx/dt
    initial: Any = eqx.field(static=True)  # (p) -> x0
    switch_times: Any = eqx.field(static=True)  # (p) -> times at which the rhs jumps
    measure: Any = eqx.field(static=True)  # (time, x, p, theta, z) -> [h..., sigma...]
    n_observables: int = eqx.field(static=True)
    time_dependent: bool = eqx.field(static=True)
    state_ids: tuple[str, ...] = eqx.field(static=True)
    parameter_ids: tuple[str, ...] = eqx.field(static=True)
    observable_ids: tuple[str, ...] = eqx.field(static=True)
    #: rows w of the conservation laws (wᵀ·dx/dt ≡ 0), for the steady state's implicit
    #: derivative; None: differentiate through the integration to steady state instead
    conservation: tuple[tuple[float, ...], ...] | None = eqx.field(static=True, default=None)


def conservation_laws(rhs, n_states: int, n_parameters: int, samples: int = 4, seed: int = 0):
    """The conservation laws of dx/dt = rhs(t, x, p): an orthonormal basis (rows) of the
    vectors w with wᵀ·∂rhs/∂x = 0 at every state and parameter value, found from the
    Jacobians at a few random points (x, p uniform in [0.5, 2]). A constant state (a zero
    row of the right-hand side) counts as one law.

    None — differentiate through the integration instead — if a Jacobian there is not
    finite, or if the laws found do not explain each Jacobian's rank deficiency (laws whose
    weights depend on the parameters, e.g. on compartment sizes, or another singularity):
    the implicit derivative needs rank(J) + laws = states."""
    import numpy as np

    def rank(matrix):
        singular = np.linalg.svd(matrix, compute_uv=False)
        return int(np.sum(singular > 1e-9 * max(float(singular.max(initial=0.0)), 1e-300)))

    rng = np.random.default_rng(seed)
    jacobians = []
    for _ in range(samples):
        x = jnp.asarray(rng.uniform(0.5, 2.0, n_states))
        p = jnp.asarray(rng.uniform(0.5, 2.0, n_parameters))
        jacobian = np.asarray(jax.jacfwd(rhs, argnums=1)(0.0, x, p))
        if not np.all(np.isfinite(jacobian)):
            return None
        jacobians.append(jacobian)
    stacked = np.concatenate([j.T for j in jacobians])  # wᵀJ = 0  ⇔  Jᵀw = 0
    _, _, vt = np.linalg.svd(stacked, full_matrices=True)
    laws = vt[rank(stacked) :]
    if any(rank(j) + laws.shape[0] != n_states for j in jacobians):
        return None
    return tuple(tuple(float(v) for v in row) for row in laws)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _at_steady_state(rhs, x, t, p, x0, conservation):
    """x (a steady state of rhs reached from x0) with the implicit-function derivative."""
    return x


@_at_steady_state.defjvp
def _at_steady_state_jvp(rhs, primals, tangents):
    """d x*: ∂f/∂x·dx* = −∂f/∂p·dp on the steady state, and C·dx* = C·dx0 for the
    conservation laws C (the totals are those of the initial state); least squares on the
    stacked system, which has full column rank at a hyperbolic steady state."""
    x, t, p, x0, conservation = primals
    _, _, p_dot, x0_dot, _ = tangents
    jacobian = jax.jacfwd(lambda y: rhs(t, y, p))(x)
    _, f_dot = jax.jvp(lambda q: rhs(t, x, q), (p,), (p_dot,))
    matrix = jnp.concatenate([jacobian, conservation])
    vector = jnp.concatenate([-f_dot, conservation @ x0_dot])
    return x, jnp.linalg.lstsq(matrix, vector)[0]


def _scale(x, code):
    return jnp.where(code == 1, jnp.log(x), jnp.where(code == 2, jnp.log10(x), x))


class PetabProblem(AbstractFitProblem):
    """A PEtab problem, ready for the fitting engine. Build with `mgjax.petab.import_problem`.

    Coordinates: `u` (unconstrained, what optimisers move) ↔ `to_values(u)` (the estimated
    parameters on the linear scale, in the parameter table's order, `free`)."""

    model: PetabModel
    theta_nominal: Float[Array, " n_parameters"]  # every parameter-table parameter, linear
    estimated_index: Int[Array, " p"]
    lower: Float[Array, " p"]  # bounds of the estimated parameters, linear scale
    upper: Float[Array, " p"]
    scale_code: Int[Array, " p"]  # 0 lin, 1 log, 2 log10
    prior_code: Int[Array, " p"]
    prior_a: Float[Array, " p"]
    prior_b: Float[Array, " p"]
    inner_index: Int[Array, " inner"]  # hierarchical (closed-form) parameters, in theta
    inner_lower: Float[Array, " inner"]
    inner_upper: Float[Array, " inner"]
    row_scale_group: Int[Array, " rows"]  # which inner scaling factor scales the row (-1 none)
    row_sigma_group: Int[Array, " rows"]  # which inner noise parameter is the row's σ (-1 none)
    condition_const: Float[Array, "conditions model_parameters"]
    condition_ref: Int[Array, "conditions model_parameters"]  # -1: use condition_const
    state_const: Float[Array, "conditions states"]
    state_ref: Int[Array, "conditions states"]
    state_set: Bool[Array, "conditions states"]
    sim_condition: Int[Array, " simulations"]
    sim_preequilibration: Int[Array, " simulations"]  # index into preequilibration_conditions
    preequilibration_conditions: Int[Array, " preequilibrations"]
    times: Float[Array, " times"]
    row_simulation: Int[Array, " rows"]
    row_time: Int[Array, " rows"]
    row_observable: Int[Array, " rows"]
    row_z_const: Float[Array, "rows placeholders"]
    row_z_ref: Int[Array, "rows placeholders"]
    measurements: Float[Array, " rows"]
    row_transform: Int[Array, " rows"]
    row_laplace: Bool[Array, " rows"]
    steady_state_rtol: Float[Array, ""]
    steady_state_atol: Float[Array, ""]
    options: SolverOptions
    free: tuple[str, ...] = eqx.field(static=True)
    transforms: tuple[str, ...] = eqx.field(static=True)
    parameter_ids: tuple[str, ...] = eqx.field(static=True)
    least_squares: bool = eqx.field(static=True)  # Levenberg–Marquardt applies
    #: every estimated parameter of the parameter table, in its order (`free` ∪ `inner_ids`)
    estimated_ids: tuple[str, ...] = eqx.field(static=True, default=())
    inner_ids: tuple[str, ...] = eqx.field(static=True, default=())
    inner_kinds: tuple[str, ...] = eqx.field(static=True, default=())
    name: str = eqx.field(static=True, default="petab")
    #: simulate the conditions one after another (CPU: each costs its own steps) instead of
    #: vmapped (GPU: all conditions in parallel, each as long as the slowest)
    sequential_simulations: bool = eqx.field(static=True, default=True)
    #: "sine" (default), "reflect" (a triangle wave: bounds reflect steps, like the
    #: reflective trust region of fides) or "logistic": how u maps into the bounds
    bound_transform: str = eqx.field(static=True, default="sine")
    error_parameters: tuple = eqx.field(static=True, default=())

    # --- coordinates (AbstractFitProblem) -------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return self.free

    @property
    def prior_mean(self) -> Float[Array, " p"]:  # no log-normal shrinkage report for PEtab
        return jnp.full(len(self.free), jnp.nan)

    @property
    def prior_sd(self) -> Float[Array, " p"]:
        return jnp.ones(len(self.free))

    def log_scale(self) -> tuple[bool, ...]:
        return tuple(t == "loglogit" for t in self.transforms)

    def _scaled_bounds(self):
        is_log = jnp.asarray(self.log_scale(), dtype=bool)
        lo = jnp.where(is_log, jnp.log(jnp.where(is_log, self.lower, 1.0)), self.lower)
        hi = jnp.where(is_log, jnp.log(jnp.where(is_log, self.upper, 1.0)), self.upper)
        return is_log, lo, hi

    def to_values(self, u: Float[Array, " p"]) -> Float[Array, " p"]:
        """u → linear values inside the bounds: on the parameter's scale x = lb + (ub − lb)·f,
        with f = (1 + sin u)/2 (MINUIT's transform for doubly bounded parameters: a bound is
        reached at a finite u, where many benchmark optima lie) or f = sigmoid(u)."""
        u = jnp.asarray(u, dtype=jnp.float64)
        is_log, lo, hi = self._scaled_bounds()
        if self.bound_transform == "sine":
            f = 0.5 * (1.0 + jnp.sin(u))
        elif self.bound_transform == "reflect":
            f = 1.0 - jnp.abs(jnp.mod(u, 2.0) - 1.0)  # a triangle wave: reflected at bounds
        else:
            f = jax.nn.sigmoid(u)
        x = lo + (hi - lo) * f
        return jnp.where(is_log, jnp.exp(x), x)

    def from_values(self, values: Any) -> Float[Array, " p"]:
        values = jnp.asarray(values, dtype=jnp.float64)
        is_log, lo, hi = self._scaled_bounds()
        safe = jnp.where(is_log, jnp.maximum(values, 1e-300), values)
        x = jnp.where(is_log, jnp.log(safe), values)
        if self.bound_transform == "sine":
            # a value exactly at a bound would sit where d(value)/du = 0 and never move:
            # start 1e-4 of the range inside
            f = jnp.clip((x - lo) / (hi - lo), 1e-4, 1.0 - 1e-4)
            return jnp.arcsin(2.0 * f - 1.0)
        if self.bound_transform == "reflect":
            return jnp.clip((x - lo) / (hi - lo), 0.0, 1.0)
        f = jnp.clip((x - lo) / (hi - lo), 1e-12, 1 - 1e-12)
        return jnp.log(f) - jnp.log1p(-f)

    def initial(self) -> Float[Array, " p"]:
        """The nominal values (parameter table) in optimisation coordinates."""
        return self.from_values(self.nominal_values())

    def nominal_values(self) -> Float[Array, " p"]:
        return self.theta_nominal[self.estimated_index]

    def to_scale(self, values: Any) -> Any:
        """Linear values → each parameter's PEtab scale (lin, log or log10)."""
        return _scale(jnp.asarray(values), self.scale_code)

    def from_scale(self, scaled: Any) -> Any:
        scaled = jnp.asarray(scaled)
        return jnp.where(
            self.scale_code == 1,
            jnp.exp(scaled),
            jnp.where(self.scale_code == 2, 10.0**scaled, scaled),
        )

    # --- simulation ----------------------------------------------------------------------
    def theta(self, values: Float[Array, " p"]) -> Float[Array, " n_parameters"]:
        """All parameter-table values (linear) with the estimated ones set to `values` (and
        the analytically optimised ones, if any, to 1: they are applied after simulating)."""
        theta = self.theta_nominal.at[self.estimated_index].set(values)
        return theta.at[self.inner_index].set(1.0)

    def condition_parameters(self, theta: Any) -> Float[Array, "conditions model_parameters"]:
        return jnp.where(
            self.condition_ref >= 0, theta[jnp.maximum(self.condition_ref, 0)], self.condition_const
        )

    def _initial_states(self, theta, p, condition):
        x0 = self.model.initial(p)
        override = jnp.where(
            self.state_ref[condition] >= 0,
            theta[jnp.maximum(self.state_ref[condition], 0)],
            self.state_const[condition],
        )
        return x0, override

    def _switch_times(self, p):
        """Times (time units of the model) at which the right-hand side jumps; None: none."""
        if self.model.switch_times is None:
            return None
        return self.model.switch_times(p)

    def steady_state(self, p: Any, x0: Any) -> tuple[Any, Any]:
        """Integrate to steady state: max_i |dx_i/dt| / (atol + rtol·|x_i|) < 1 (AMICI's
        default criterion on the state derivative, with its default tolerances).

        Its derivative (autonomous models with known conservation laws) is the implicit
        one of the steady state, ∂f/∂x·dx* = −∂f/∂p·dp with the conserved totals of x0
        (what AMICI's steady-state sensitivities compute), not that of the integration;
        otherwise the integration is differentiated."""
        implicit = self.model.conservation is not None and not self.model.time_dependent
        if implicit:
            p_end, x0_end = jax.lax.stop_gradient((p, x0))
        else:
            p_end, x0_end = p, x0

        def reached(t, x, p, **kwargs):
            dx = self.model.rhs(t, x, p)
            scale = self.steady_state_atol + self.steady_state_rtol * jnp.abs(x)
            return jnp.max(jnp.abs(dx) / scale) < 1.0

        sol = integrate(
            self.model.rhs,
            self.options,
            t0=0.0,
            t1=jnp.inf,
            y0=x0_end,
            args=p_end,
            saveat=dfx.SaveAt(t1=True),
            autonomous=not self.model.time_dependent,
            dt0=None,
            event=dfx.Event(reached),
            throw=False,
        )
        ok = (sol.result == dfx.RESULTS.successful) | (sol.result == dfx.RESULTS.event_occurred)
        x = sol.ys[-1]
        if implicit:
            laws = jnp.asarray(self.model.conservation, dtype=x.dtype).reshape(-1, x.shape[0])
            x = _at_steady_state(self.model.rhs, x, sol.ts[-1], p, x0, laws)
        return x, ok

    def _simulate_one(self, p, x0):
        sol = integrate(
            self.model.rhs,
            self.options,
            t0=0.0,
            t1=jnp.maximum(self.times[-1], 1e-9),
            y0=x0,
            args=p,
            saveat=dfx.SaveAt(ts=self.times),
            autonomous=not self.model.time_dependent,
            dt0=None,
            jump_ts=self._switch_times(p),
            throw=False,
        )
        return sol.ys, sol.result == dfx.RESULTS.successful

    def simulate_states(
        self, values: Any
    ) -> tuple[
        Float[Array, "simulations times states"],
        Bool[Array, " simulations"],
        Float[Array, "simulations model_parameters"],
        Float[Array, " n_parameters"],
    ]:
        """States of every simulation at every measurement time, for estimated parameter
        values `values` (linear): (ys [simulations, times, states], success [simulations],
        each simulation's model parameters, all parameter-table values θ)."""
        theta = self.theta(values)
        p_all = self.condition_parameters(theta)
        x_pre = None
        pre_ok = jnp.asarray(True)
        if self.preequilibration_conditions.shape[0]:
            p_pre = p_all[self.preequilibration_conditions]

            def preequilibrate(p, condition):
                x0, override = self._initial_states(theta, p, condition)
                x0 = jnp.where(self.state_set[condition], override, x0)
                return self.steady_state(p, x0)

            x_pre, ok_pre = jax.vmap(preequilibrate)(p_pre, self.preequilibration_conditions)
            pre_ok = ok_pre

        def start(sim):
            condition = self.sim_condition[sim]
            p = p_all[condition]
            x0, override = self._initial_states(theta, p, condition)
            ok = jnp.asarray(True)
            if x_pre is not None:
                k = self.sim_preequilibration[sim]
                x0 = jnp.where(k >= 0, x_pre[jnp.maximum(k, 0)], x0)
                ok = jnp.where(k >= 0, pre_ok[jnp.maximum(k, 0)], True)
            return p, jnp.where(self.state_set[condition], override, x0), ok

        sims = jnp.arange(self.sim_condition.shape[0])
        p_sim, x0_sim, ok_start = jax.vmap(start)(sims)
        if self.sequential_simulations:
            ys, ok = jax.lax.map(lambda a: self._simulate_one(*a), (p_sim, x0_sim))
        else:
            ys, ok = jax.vmap(self._simulate_one)(p_sim, x0_sim)
        return ys, ok & ok_start, p_sim, theta

    def simulate(self, values: Any) -> tuple[Any, Any, Any]:
        """(simulated observable, σ, success) of every measurement row (the measurement
        table's order) at estimated parameter values `values` (linear scale)."""
        h, sigma, success, _ = self.simulate_rows(values)
        return h, sigma, success

    def simulate_rows(self, values: Any) -> tuple[Any, Any, Any, Any]:
        """`simulate`, plus the values of the analytically optimised (hierarchical) scaling and
        noise parameters (`inner_ids`; empty without them)."""
        ys, ok, p_sim, theta = self.simulate_states(values)
        z = jnp.where(self.row_z_ref >= 0, theta[jnp.maximum(self.row_z_ref, 0)], self.row_z_const)
        n = self.model.n_observables

        def row(sim, time_index, observable, z_row):
            out = self.model.measure(
                self.times[time_index], ys[sim, time_index], p_sim[sim], theta, z_row
            )
            return out[observable], out[n + observable]

        h, sigma = jax.vmap(row)(self.row_simulation, self.row_time, self.row_observable, z)
        h, sigma, inner = self._inner_optimum(h, sigma)
        success = jnp.all(ok) & jnp.all(jnp.isfinite(h)) & jnp.all(jnp.isfinite(sigma))
        return h, sigma, success, inner

    def all_estimates(self, values: Any) -> Float[Array, " estimated"]:
        """Every estimated parameter of the table (`estimated_ids`, linear scale) at outer
        values `values`: those plus the closed-form optima of the hierarchical ones."""
        values = jnp.asarray(values, dtype=jnp.float64)
        if not self.inner_ids:
            return values
        inner = self.simulate_rows(values)[3]
        out = [
            values[self.free.index(p)] if p in self.free else inner[self.inner_ids.index(p)]
            for p in self.estimated_ids
        ]
        return jnp.stack(out)

    def _inner_optimum(self, h, sigma):
        """Hierarchical optimisation (Loos et al., Bioinformatics 2018): scaling factors s
        (observable = s·g, lin scale) and noise parameters σ (noise formula = σ) that occur
        nowhere else have closed-form optima given the simulation — s = Σ y·g / Σ g² over
        the rows it scales (they share one σ), then σ² = mean squared residual over the rows
        it serves — each clipped to its bounds (the objective is unimodal in each, so the
        clipped value is the bounded optimum). Computed with s = σ = 1 in the simulation."""
        n_inner = self.inner_index.shape[0]
        if n_inner == 0:
            return h, sigma, jnp.zeros((0,))
        m = self.measurements
        groups = n_inner + 1  # the last segment collects rows outside any group
        scale_group = jnp.where(self.row_scale_group >= 0, self.row_scale_group, n_inner)
        finite_h = jnp.where(jnp.isfinite(h), h, 0.0)
        numerator = jax.ops.segment_sum(m * finite_h, scale_group, groups)[:n_inner]
        denominator = jax.ops.segment_sum(finite_h**2, scale_group, groups)[:n_inner]
        scale = jnp.clip(
            numerator / jnp.where(denominator > 0, denominator, 1.0),
            self.inner_lower,
            self.inner_upper,
        )
        h = jnp.where(self.row_scale_group >= 0, scale[jnp.maximum(self.row_scale_group, 0)] * h, h)
        sigma_group = jnp.where(self.row_sigma_group >= 0, self.row_sigma_group, n_inner)
        code = self.row_transform
        positive = (code == 0) | (h > 0)
        safe_h = jnp.where(jnp.isfinite(h) & positive, h, jnp.where(code == 0, m, jnp.abs(m)))
        squares = (_scale(m, code) - _scale(safe_h, code)) ** 2
        total = jax.ops.segment_sum(squares, sigma_group, groups)[:n_inner]
        count = jax.ops.segment_sum(jnp.ones_like(m), sigma_group, groups)[:n_inner]
        noise = jnp.clip(
            jnp.sqrt(total / jnp.maximum(count, 1.0) + 1e-300), self.inner_lower, self.inner_upper
        )
        sigma = jnp.where(
            self.row_sigma_group >= 0, noise[jnp.maximum(self.row_sigma_group, 0)], sigma
        )
        is_scale = jnp.asarray([k == "scaling" for k in self.inner_kinds], dtype=bool)
        return h, sigma, jnp.where(is_scale, scale, noise)

    # --- likelihood ----------------------------------------------------------------------
    def _row_terms(self, h, sigma, ok):
        """(normalised residual r, σ, per-row negative log-likelihood) with PEtab's constants."""
        m = self.measurements
        code = self.row_transform
        valid = ok & jnp.isfinite(h) & ((code == 0) | (h > 0))
        safe_h = jnp.where(valid, h, jnp.where(code == 0, m, jnp.abs(m) + 1.0))
        safe_sigma = jnp.where(jnp.isfinite(sigma) & (sigma > 0), sigma, 1.0)
        r = (_scale(m, code) - _scale(safe_h, code)) / safe_sigma
        r = jnp.where(valid & ok, r, FAILED_RESIDUAL)
        jacobian = jnp.where(
            code == 1, jnp.log(jnp.abs(m)), jnp.where(code == 2, jnp.log(jnp.abs(m) * LN10), 0.0)
        )
        normal = 0.5 * LOG_2PI + jnp.log(safe_sigma) + 0.5 * r**2
        laplace = jnp.log(2.0 * safe_sigma) + jnp.abs(r)
        nllh = jnp.where(self.row_laplace, laplace, normal) + jacobian
        return r, safe_sigma, nllh

    def predictions(self, u: Float[Array, " p"]) -> tuple[Any, Any]:
        h, sigma, ok = self.simulate(self.to_values(u))
        return (h, sigma), ok

    def residuals_from(self, u: Float[Array, " p"], preds: Any, ok: Any) -> Float[Array, " m"]:
        """r = (T(m) − T(s))/σ of every measurement, then √(2·log σ + C) per measurement
        (so ½·Σ r² is the negative log-likelihood up to constants), then the prior
        residuals of normal priors."""
        return self._residual_vector(self.to_values(u), preds, ok)

    def _residual_vector(self, values, preds, ok):
        h, sigma = preds
        r, safe_sigma, _ = self._row_terms(h, sigma, ok)
        noise = jnp.sqrt(jnp.maximum(2.0 * jnp.log(safe_sigma) + NOISE_RESIDUAL_OFFSET, 0.0))
        return jnp.concatenate([r, noise, self._prior_residuals(values)])

    # --- the PEtab scale (for optimisers that keep the bounds themselves) ---------------
    def bounds_on_scale(self) -> tuple[Float[Array, " p"], Float[Array, " p"]]:
        """The bounds of the outer estimated parameters on their PEtab scale."""
        return self.to_scale(self.lower), self.to_scale(self.upper)

    def residuals_on_scale(self, scaled: Float[Array, " p"]) -> Float[Array, " m"]:
        """`residuals` as a function of the outer estimated parameters on their PEtab scale
        (no bound transform: for an optimiser that keeps the bounds itself)."""
        values = self.from_scale(scaled)
        h, sigma, ok = self.simulate(values)
        return self._residual_vector(values, (h, sigma), ok)

    def objective_on_scale(self, scaled: Float[Array, " p"]) -> tuple[Any, Any]:
        """(negative log-likelihood + priors, whether every simulation succeeded) at the
        outer estimated parameters on their PEtab scale, from one simulation."""
        values = self.from_scale(scaled)
        h, sigma, ok = self.simulate(values)
        return self.data_negative_log_likelihood(h, sigma, ok) + self.prior_term(values), ok

    def negative_log_likelihood_on_scale(self, scaled: Float[Array, " p"]) -> Any:
        """The objective (negative log-likelihood + priors) on the PEtab scale."""
        return self.objective_on_scale(scaled)[0]

    def fisher_residuals(self, u: Float[Array, " p"]) -> Float[Array, " m"]:
        """Residuals whose JᵀJ is the Fisher information of the likelihood: (T(m) − T(s))/σ
        and √2·log σ per measurement (normal noise), plus the normal-prior residuals."""
        (h, sigma), ok = self.predictions(u)
        r, safe_sigma, _ = self._row_terms(h, sigma, ok)
        return jnp.concatenate(
            [r, math.sqrt(2.0) * jnp.log(safe_sigma), self._prior_residuals(self.to_values(u))]
        )

    def data_chi2(self, residual: Float[Array, " m"]) -> Float[Array, ""]:
        """Σ r² of the normalised measurement residuals (the first block of `residuals`)."""
        return jnp.sum(residual[: self.measurements.shape[-1]] ** 2)

    def fisher_from(
        self, residual: Float[Array, " m"], jacobian: Float[Array, "m p"]
    ) -> Float[Array, "p p"]:
        """`fisher_residuals`' JᵀJ from `residuals` and their Jacobian: the noise rows
        √(2·log σ + C) give ∂log σ = r·∂r."""
        n = self.measurements.shape[-1]
        d_log_sigma = jacobian[n : 2 * n] * residual[n : 2 * n, None]
        j, j_prior = jacobian[:n], jacobian[2 * n :]
        return j.T @ j + 2.0 * d_log_sigma.T @ d_log_sigma + j_prior.T @ j_prior

    def data_negative_log_likelihood(self, h, sigma, ok) -> Any:
        """−log p(data | θ) with every constant (what `petab.v1.calculate_llh` returns,
        negated)."""
        return jnp.sum(self._row_terms(h, sigma, ok)[2])

    def chi2(self, h, sigma, ok) -> Any:
        return jnp.sum(self._row_terms(h, sigma, ok)[0] ** 2)

    def negative_log_likelihood_from(self, u: Float[Array, " p"], preds: Any, ok: Any) -> Any:
        """Negative log-likelihood plus the priors' negative log-densities (the objective)."""
        h, sigma = preds
        return self.data_negative_log_likelihood(h, sigma, ok) + self.prior_term(self.to_values(u))

    # --- priors --------------------------------------------------------------------------
    def _prior_argument(self, values):
        code = self.prior_code
        on_scale = (code == 5) | (code == 6) | (code == 8)
        log = (code == 3) | (code == 4)
        x = jnp.where(on_scale, self.to_scale(values), values)
        return jnp.where(log, jnp.log(jnp.maximum(values, 1e-300)), x)

    def _prior_residuals(self, values):
        normal = (self.prior_code == 1) | (self.prior_code == 3) | (self.prior_code == 5)
        if not len(self.free):
            return jnp.zeros((0,))
        x = self._prior_argument(values)
        return jnp.where(normal, (x - self.prior_a) / self.prior_b, 0.0)

    def prior_term(self, values) -> Any:
        """Σ −log prior density of the estimated parameters (PEtab's objective priors)."""
        code = self.prior_code
        x = self._prior_argument(values)
        a, b = self.prior_a, self.prior_b
        normal = 0.5 * LOG_2PI + jnp.log(b) + 0.5 * ((x - a) / b) ** 2
        laplace = jnp.log(2.0 * b) + jnp.abs(x - a) / b
        log_jacobian = jnp.log(jnp.maximum(values, 1e-300))
        uniform = jnp.log(jnp.abs(b - a))
        term = jnp.select(
            [code == 1, code == 2, code == 3, code == 4, code == 5, code == 6, code >= 7],
            [
                normal,
                laplace,
                normal + log_jacobian,
                laplace + log_jacobian,
                normal,
                laplace,
                uniform,
            ],
            0.0,
        )
        return jnp.sum(term)

    # --- the engine's fix_parameter / profile hook ---------------------------------------
    def fix(self, name: str, value: Any) -> PetabProblem:
        """The same problem with estimated parameter `name` fixed at `value` (linear)."""
        if name not in self.free:
            raise ValueError(f"{name!r} is not an outer estimated parameter ({self.free})")
        k = self.free.index(name)
        keep = jnp.asarray([i for i in range(len(self.free)) if i != k], dtype=int)
        theta = self.theta_nominal.at[self.estimated_index[k]].set(value)
        out = eqx.tree_at(
            lambda q: (
                q.theta_nominal,
                q.estimated_index,
                q.lower,
                q.upper,
                q.scale_code,
                q.prior_code,
                q.prior_a,
                q.prior_b,
            ),
            self,
            (
                theta,
                self.estimated_index[keep],
                self.lower[keep],
                self.upper[keep],
                self.scale_code[keep],
                self.prior_code[keep],
                self.prior_a[keep],
                self.prior_b[keep],
            ),
        )
        return _replace_static(
            out,
            free=tuple(n for n in self.free if n != name),
            transforms=tuple(t for i, t in enumerate(self.transforms) if i != k),
        )


def _replace_static(problem: PetabProblem, **changes) -> PetabProblem:
    fields = {f: getattr(problem, f) for f in problem.__dataclass_fields__}
    fields.update(changes)
    return PetabProblem(**fields)
