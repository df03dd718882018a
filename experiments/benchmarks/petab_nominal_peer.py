"""Check mgjax's nominal evaluation of a PEtab problem against AMICI's (run in the peer
environment, `.peer-venv`; see `setup_petab_peers.sh`).

    mgjax petab PROBLEM.yaml --nominal --out RUN
    PATH="$PWD/.peer-venv/bin:$PATH" .peer-venv/bin/python \\
        experiments/benchmarks/petab_nominal_peer.py PROBLEM.yaml RUN/simulations.tsv \\
        [--rtol 1e-12 --atol 1e-16]

Prints AMICI's NLLH at the nominal parameters (pyPESTO's objective), mgjax's (from
RUN/summary.json), and the largest relative and absolute difference between the two
simulation tables, row by row (matched on observable, condition and time). Useful where a
problem's `simulatedData` file in the benchmark collection is older than its tables.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", type=Path)
    parser.add_argument("simulations", type=Path, help="mgjax's RUN/simulations.tsv")
    parser.add_argument("--rtol", type=float, default=1e-12)
    parser.add_argument("--atol", type=float, default=1e-16)
    args = parser.parse_args()

    import petab.v1 as petab
    import pypesto.petab
    from amici.sim.sundials.petab.v1 import rdatas_to_simulation_df

    petab_problem = petab.Problem.from_yaml(str(args.problem))
    name = args.problem.stem.replace("-", "_").replace(".", "_")
    folder = Path(tempfile.gettempdir()) / f"amici_{name}"
    importer = pypesto.petab.PetabImporter(
        petab_problem, output_folder=str(folder), model_name=name
    )
    creator = importer.create_objective_creator()
    model = creator.create_model(verbose=False)
    solver = model.create_solver()
    solver.set_relative_tolerance(args.rtol)
    solver.set_absolute_tolerance(args.atol)
    objective = creator.create_objective(model=model, solver=solver, verbose=False)
    problem = importer.create_problem(objective)
    x = np.asarray(petab_problem.x_nominal_scaled)[problem.x_free_indices]
    result = problem.objective(x, return_dict=True)
    peer = rdatas_to_simulation_df(result["rdatas"], model, petab_problem.measurement_df)

    ours = pd.read_csv(args.simulations, sep="\t")
    keys = ["observableId", "simulationConditionId", "time"]
    both = ours.merge(peer[keys + ["simulation"]], on=keys, suffixes=("", "_amici"))
    difference = (both["simulation"] - both["simulation_amici"]).abs()
    relative = difference / both["simulation_amici"].abs().clip(lower=1e-8)
    summary = args.simulations.parent / "summary.json"
    mgjax_nllh = json.loads(summary.read_text())["nllh"] if summary.exists() else float("nan")
    print(f"AMICI NLLH at the nominal parameters (rtol {args.rtol}): {float(result['fval']):.6f}")
    print(f"mgjax NLLH: {mgjax_nllh:.6f}")
    print(
        f"simulations: {len(both)} of {len(ours)} rows matched; max relative difference "
        f"{relative.max():.2e}, max absolute {difference.max():.2e}"
    )


if __name__ == "__main__":
    main()
