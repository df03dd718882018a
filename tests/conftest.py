import gc
import os

# Tests compile many programs and run each briefly: XLA:CPU's compile work is turned down for
# them (LLVM backend optimisation 0, no expensive LLVM passes, the classic loop emitters instead
# of the fusion emitters: a Diffrax gradient compiles in 9 s instead of 19 s; results agree to
# rounding). Users' runs keep XLA's defaults. Set before JAX creates its CPU backend.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
    "--xla_cpu_use_fusion_emitters=false",
)

import jax  # noqa: E402
import pytest  # noqa: E402

# float64 throughout, and strict dtype promotion (as Diffrax's tests): an implicit int/float or
# float32/float64 mix in mgjax is an error. (Where mgjax calls optax's L-BFGS, whose int32
# counter meets int64 indices, it promotes explicitly; the examples driving optax's Adam and
# numpyro run under standard promotion, see test_embedding_examples.py.)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

import mgjax  # noqa: E402


@pytest.fixture(autouse=True)
def _no_persistent_compilation_cache(monkeypatch):
    """The CLI turns JAX's persistent cache on for the whole process; in the test process that
    would make later tests read executables written by other processes. Tests of the cache run
    the CLI in a subprocess."""
    monkeypatch.setenv("MGJAX_COMPILATION_CACHE", "0")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Every compiled XLA:CPU program holds memory mappings until JAX's caches drop it; over
    the whole suite they exceed the kernel's limit (vm.max_map_count, 65530) and the next
    compilation segfaults. Each test module releases its programs when it ends."""
    yield
    from mgjax.runtime import _programs as _program_cache

    _program_cache._IN_MEMORY.clear()  # compiled batch/report programs kept by the runner
    _program_cache._JSON_IN_MEMORY.clear()  # and the optimiser-state shapes beside them
    from mgjax.population import _fit as _population_fit

    _population_fit._COMPILED.clear()  # compiled population fits
    jax.clear_caches()
    gc.collect()


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
