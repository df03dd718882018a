import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

import mgjax


def observables_at_steady_state(model, inputs=None):
    """All observables at the fasting steady state of `model`, as floats."""
    state = mgjax.steady_state(model, inputs)
    obs = model.observables(state.y, inputs or mgjax.Inputs.zeros(), jnp)
    return {k: float(v) for k, v in obs.items()}


def relative_error(a, b, floor=0.0):
    a, b = np.asarray(a), np.asarray(b)
    return np.abs(a - b) / np.maximum(np.abs(b), floor)


def tree_allclose(x, y, rtol=1e-7, atol=1e-9):
    return all(
        np.allclose(a, b, rtol=rtol, atol=atol)
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))
    )


WEEK = 7 * 1440.0


ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_experiment(name):
    """The module `experiments/<name>.py` (experiments are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
