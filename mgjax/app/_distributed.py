"""Multi-process runs on JAX's own distributed runtime (`jax.distributed`).

`jax.distributed.initialize` must run before anything touches a JAX backend, and importing
mgjax builds arrays (parameter defaults). So `mgjax fit --distributed` restarts itself through
this file run as a script (`python …/mgjax/app/_distributed.py fit …`): it joins the job first,
sets `MGJAX_DISTRIBUTED=1` (joined), and only then imports mgjax and runs the command. Importing
mgjax itself never joins a job.

The coordinator, the number of processes and this process's index come from
`JAX_COORDINATOR_ADDRESS`, `MGJAX_NUM_PROCESSES` and `MGJAX_PROCESS_ID`, or, when those are
unset, from the cluster (SLURM, Open MPI, …: JAX's auto-detection). On CPU, processes
synchronise through Gloo.

This module imports nothing from mgjax (it runs before mgjax is imported).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Set (to "1") in a process that has joined its distributed job.
ENV_FLAG = "MGJAX_DISTRIBUTED"


def _int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def joined() -> bool:
    """Whether this process has joined its distributed job (through `restart_joined`)."""
    return os.environ.get(ENV_FLAG) == "1"


def initialize_from_environment() -> None:
    """Join the distributed job described by the environment (once per process)."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=os.environ.get("JAX_COORDINATOR_ADDRESS") or None,
        num_processes=_int("MGJAX_NUM_PROCESSES"),
        process_id=_int("MGJAX_PROCESS_ID"),
    )


def restart_joined(argv: list[str], settings: dict[str, str]) -> None:
    """Replace this process by one that joins the job (`settings`: the environment variables
    above) before importing mgjax, then runs `mgjax *argv`."""
    env = dict(os.environ, **settings)
    env.pop(ENV_FLAG, None)
    os.execvpe(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv], env)


def _main() -> None:  # run as a script by `restart_joined`
    import runpy

    sys.path.pop(0)  # this file's folder, put first by Python, is no import root
    initialize_from_environment()
    os.environ[ENV_FLAG] = "1"
    sys.argv = ["mgjax", *sys.argv[1:]]
    runpy.run_module("mgjax", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _main()
