"""The CPU's cores as JAX devices: XLA's CPU platform shows one device unless told otherwise,
and a program sharded over several host devices runs each device's share on its own core
(the population engine splits its subjects so)."""

from __future__ import annotations

import os

_FLAG = "--xla_force_host_platform_device_count"


def use_host_devices(n: int | None = None) -> int:
    """Let XLA's CPU platform show `n` devices (default: the machine's cores). Takes effect
    only before JAX starts its backends, and never overrides a count that `XLA_FLAGS`
    already sets; returns the count in force from then on (1 when none could be set)."""
    flags = os.environ.get("XLA_FLAGS", "")
    for part in flags.split():
        if part.startswith(_FLAG + "="):
            return int(part.split("=", 1)[1])
    try:  # JAX's private module: on a JAX without it, leave the flags alone
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:
        return 1
    if backends_are_initialized():  # too late: XLA has read its flags
        return 1
    n = max(int(n or os.cpu_count() or 1), 1)
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={n}".strip()
    return n
