"""Export the t2dm preset under each dynamic protocol as a PEtab problem whose measurements are
mgjax's own simulation at tight tolerances (rtol 1e-10), for `amici_check.py`: AMICI simulating
the exported model must reproduce them.

    python experiments/benchmarks/peer/export_protocols.py --out experiments/output/export_protocols
    # then, in a venv with amici and petab (experiments/benchmarks/peer/README.md):
    python experiments/benchmarks/peer/amici_check.py experiments/output/export_protocols
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pandas as pd

import mgjax
from mgjax import SolverOptions
from mgjax.petab import to_petab
from mgjax.protocols import IVGTT, HyperglycemicClamp, HyperinsulinemicClamp, OralMagnesiumTrial

jax.config.update("jax_enable_x64", True)

OBSERVED = ["glucose", "insulin", "serum_mg", "c_peptide", "homa_ir"]
PROTOCOLS = {
    "ivgtt": (IVGTT(), [2.0, 10.0, 30.0, 60.0, 180.0]),
    "hyperinsulinemic_clamp": (HyperinsulinemicClamp(), [5.0, 30.0, 90.0, 120.0]),
    "hyperglycemic_clamp": (HyperglycemicClamp(), [2.0, 10.0, 60.0, 120.0]),
    "mg_trial": (OralMagnesiumTrial.daily(10.0, 2), [0.0, 1440.0, 7 * 1440.0, 14 * 1440.0]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/output/export_protocols"))
    parser.add_argument("--preset", default="t2dm")
    args = parser.parse_args()
    model = mgjax.preset(args.preset)
    tight = SolverOptions(rtol=1e-10, atol=1e-12, max_steps=100_000)
    for name, (protocol, times) in PROTOCOLS.items():
        t0 = time.perf_counter()
        traj = mgjax.simulate(model, protocol, jnp.asarray(times), options=tight)
        rows = [
            dict(time=t, observable=o, value=float(traj[o][i]))
            for i, t in enumerate(times)
            for o in OBSERVED
        ]
        path = to_petab(model, protocol, pd.DataFrame(rows), args.out / name, name=name)
        print(f"{path} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
