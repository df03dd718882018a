import importlib.util
import pathlib
import signal
import sys
from contextlib import contextmanager

import jax.numpy as jnp
import matplotlib.image
import numpy as np

import mgjax


def observables_at_steady_state(model, inputs=None):
    """All observables at the fasting steady state of `model`, as floats."""
    state = mgjax.steady_state(model, inputs)
    obs = model.observables(state.y, inputs or mgjax.Inputs.zeros(), jnp)
    return {k: float(v) for k, v in obs.items()}


WEEK = 7 * 1440.0


ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_experiment(path):
    """The module `experiments/<path>.py`, e.g. `load_experiment("examples/vicious_circle")`
    (experiments are scripts, not a package: as when run as a script, its own folder is on
    `sys.path` while it loads, so it may import its siblings)."""
    file = ROOT / "experiments" / f"{path}.py"
    name = file.stem
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(file.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(file.parent))
    return module


def assert_png_shows_data(path, min_data_fraction=1e-3):
    """The PNG at `path` is a drawn figure, not blank axes: some of it is inked (axes, text)
    and more than `min_data_fraction` of its pixels are coloured (lines, markers, bars, images
    in matplotlib's colours, which axes, ticks and text in greys never are)."""
    rgb = np.asarray(matplotlib.image.imread(str(path)), dtype=float)[..., :3]  # [0, 1]
    assert rgb.shape[0] >= 200 and rgb.shape[1] >= 200, (path, rgb.shape)
    inked = float(np.mean(rgb.min(axis=-1) < 0.9))
    coloured = float(np.mean(np.ptp(rgb, axis=-1) > 0.25))
    assert inked > 0.01, f"{path}: {inked:.2%} of the pixels inked (a blank figure)"
    assert coloured > min_data_fraction, f"{path}: {coloured:.3%} coloured (no data drawn)"


@contextmanager
def time_limit(seconds: int, what: str = "the body"):
    """Fail with TimeoutError (instead of hanging the suite) when the body runs longer than
    `seconds` (SIGALRM: the main thread of a POSIX process)."""

    def hang(*_):
        raise TimeoutError(f"{what} ran over {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
