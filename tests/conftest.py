import jax
import pytest

jax.config.update("jax_enable_x64", True)

import mgjax  # noqa: E402


@pytest.fixture(scope="session")
def presets():
    return {name: mgjax.preset(name) for name in mgjax.preset_names()}


@pytest.fixture(scope="session")
def fasting_states(presets):
    return {name: mgjax.steady_state(model) for name, model in presets.items()}


@pytest.fixture
def getkey():
    keys = iter(jax.random.split(jax.random.key(5678), 1000))
    return lambda: next(keys)
