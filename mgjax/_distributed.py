"""Multi-process runs on JAX's own distributed runtime (`jax.distributed`).

`jax.distributed.initialize` must run before anything touches a JAX backend, and importing
mgjax builds arrays; so a process joins a distributed job at import, when `MGJAX_DISTRIBUTED=1`
is set (`mgjax fit --distributed` sets it and restarts itself). The coordinator, the number of
processes and this process's index come from `JAX_COORDINATOR_ADDRESS`, `MGJAX_NUM_PROCESSES`
and `MGJAX_PROCESS_ID`, or, when those are unset, from the cluster (SLURM, Open MPI, …: JAX's
auto-detection). On CPU, processes synchronise through Gloo.

This module imports nothing from mgjax.
"""

from __future__ import annotations

import os

ENV_FLAG = "MGJAX_DISTRIBUTED"


def _int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def initialize_from_environment() -> None:
    """Join the distributed job described by the environment (once per process)."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=os.environ.get("JAX_COORDINATOR_ADDRESS") or None,
        num_processes=_int("MGJAX_NUM_PROCESSES"),
        process_id=_int("MGJAX_PROCESS_ID"),
    )
