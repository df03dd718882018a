"""JAX's persistent compilation cache, for command-line runs.

JAX does not cache programs that contain host callbacks, and Equinox's runtime error checks
(`eqx.error_if`, used when `throw=True`) are host callbacks; batch paths run with `throw=False`
and are cached.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def default_cache_dir() -> Path:
    root = os.environ.get("MGJAX_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(root) / "mgjax" / "jax" if root else Path.home() / ".cache" / "mgjax" / "jax"


def enable_compilation_cache(path: Path | None = None, min_compile_seconds: float = 0.5) -> Path:
    """Turn on JAX's persistent compilation cache in `path` (default `~/.cache/mgjax/jax`, or
    `$MGJAX_CACHE_DIR`); programs that took at least `min_compile_seconds` to compile are kept."""
    path = Path(path) if path is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
