"""Run-time services below every layer (they import nothing from mgjax): JAX's persistent
compilation cache, and compiled programs stored across processes (`jax.export`)."""

from ._compilation_cache import default_cache_dir as default_cache_dir
from ._compilation_cache import enable_compilation_cache as enable_compilation_cache
from ._programs import CompiledProgram as CompiledProgram
from ._programs import compile_program as compile_program
from ._programs import stored_json as stored_json
