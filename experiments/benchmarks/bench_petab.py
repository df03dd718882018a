"""PEtab benchmark: the same multistart fit (same starts, same bounds, same ODE tolerances) with
mgjax and with pyPESTO + AMICI (+ fides), in one run.

    python experiments/benchmarks/bench_petab.py [PROBLEM.yaml] [--starts 20] [--seed 1]
        [--target 141.835] [--optimisers fides,levenberg_marquardt] [--restarts 10] [--no-explore]

The starts are drawn uniformly within the bounds on each parameter's PEtab scale (log10 for
Brannmark), written to a .npy file and given to both tools verbatim. The peer runs in its own
environment (`bash experiments/benchmarks/setup_petab_peers.sh` makes `.peer-venv`; AMICI is
never an mgjax dependency); without it only mgjax's column is printed.

One mgjax row per local optimiser (`--optimisers`: fides, the default of `mgjax petab`, and/or
Optimistix's Levenberg–Marquardt). Printed per tool: time to the best optimum (starts run one
after another, on one process: the seconds until the first start that ends at NLLH ≤ target
finishes; "not reached" otherwise), starts per minute, the fraction of starts that converge,
the fraction at the target, the best NLLH, the time to the best NLLH any tool reached in this
run (within 0.01), and the ratios. Writes experiments/output/bench_petab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "tests" / "data" / "petab" / "Brannmark_JBC2010" / "Brannmark_JBC2010.yaml"


def seconds_to(nllh, seconds, level: float):
    """Seconds (starts one after another) until the first start ending at NLLH ≤ level."""
    nllh, seconds = np.asarray(nllh, dtype=float), np.asarray(seconds, dtype=float)
    hit = np.flatnonzero(np.isfinite(nllh) & (nllh <= level))
    return float(seconds[: hit[0] + 1].sum()) if hit.size else None


def summarise(name: str, nllh, converged, seconds, target: float, extra=None) -> dict:
    nllh = np.asarray(nllh, dtype=float)
    seconds = np.asarray(seconds, dtype=float)
    at_target = int(np.sum(np.isfinite(nllh) & (nllh <= target)))
    return dict(
        tool=name,
        starts=int(nllh.size),
        best_nllh=float(np.nanmin(np.where(np.isfinite(nllh), nllh, np.nan))),
        at_target=at_target,
        fraction_at_target=float(at_target / nllh.size),
        fraction_converged=float(np.mean(converged)),
        seconds_to_best=seconds_to(nllh, seconds, target),
        seconds_all_starts=float(seconds.sum()),
        starts_per_minute=float(60.0 * nllh.size / seconds.sum()),
        **(extra or {}),
    )


def run_mgjax(
    problem: Path,
    starts: Path | tuple[int, int],
    out: Path,
    rtol: float,
    atol: float,
    max_steps: int,
    optimiser: str,
    restarts: int = 10,
    explore: bool = True,
):
    """One `mgjax petab` run (the command line, in this process) from the starts in a file, or
    from `(n, seed)` drawn by the run (its starts.tsv); its multistart table and summary."""
    from mgjax.app.cli import app

    # no persistent compilation cache: the compile times measured are a fresh process's
    os.environ["MGJAX_COMPILATION_CACHE"] = "0"
    args = [str(problem), "--out", str(out)]
    if isinstance(starts, Path):
        args += ["--starts-file", str(starts)]
    else:
        args += ["--starts", str(starts[0]), "--seed", str(starts[1])]
    args += ["--rtol", str(rtol), "--atol", str(atol), "--max-steps", str(max_steps)]
    args += ["--optimiser", optimiser, "--restarts", str(restarts), "--force", "--no-progress"]
    args += [] if explore else ["--no-explore"]
    app(["petab", *args], standalone_mode=False)
    summary = json.loads((out / "summary.json").read_text())
    table = pd.read_csv(out / "multistart.csv")
    return table, summary


def run_peer(problem: Path, starts_file: Path, out: Path, rtol: float, atol: float, backend: str):
    venv = ROOT / ".peer-venv"
    if not (venv / "bin" / "python").exists():
        return None
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '')}")
    command = [
        str(venv / "bin" / "python"),
        str(ROOT / "experiments" / "benchmarks" / "petab_peer.py"),
        str(problem),
        "--starts",
        str(starts_file),
        "--out",
        str(out),
        "--backend",
        backend,
        "--rtol",
        str(rtol),
        "--atol",
        str(atol),
    ]
    subprocess.run(command, env=env, check=False)
    return json.loads(out.read_text()) if out.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", nargs="?", default=str(DEFAULT))
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", type=float, default=141.835)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-10)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument(
        "--optimisers",
        default="fides",
        help="mgjax's local optimisers, one row each: fides and/or levenberg_marquardt",
    )
    parser.add_argument(
        "--restarts",
        type=int,
        default=10,
        help="fides restarts from each start's end point (mgjax petab --restarts; 0: off)",
    )
    parser.add_argument(
        "--no-explore",
        action="store_true",
        help="mgjax petab --no-explore: no search along the flat directions of new bests",
    )
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--jax-peer", action="store_true", help="also AMICI's JAX backend")
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    problem = Path(args.problem)
    work = Path(tempfile.mkdtemp(prefix="bench_petab_"))
    starts_file = work / "starts.npy"  # the first run's starts, for the other runs and the peer

    rows, runs = [], []
    names = {
        "fides": f"fides (bounded, Gauss–Newton, ≤ {args.restarts} restarts"
        + ("" if args.no_explore else ", flat directions of new bests explored")
        + ")",
        "levenberg_marquardt": "Levenberg–Marquardt",
    }
    for optimiser in args.optimisers.split(","):
        first = not starts_file.exists()
        table, summary = run_mgjax(
            problem,
            (args.starts, args.seed) if first else starts_file,
            work / f"mgjax-{optimiser}",
            args.rtol,
            args.atol,
            args.max_steps,
            optimiser,
            args.restarts,
            not args.no_explore,
        )
        if first:  # the peer's format: .npy, on the PEtab scale, the parameter table's order
            drawn = pd.read_csv(work / f"mgjax-{optimiser}" / "starts.tsv", sep="\t")
            np.save(starts_file, drawn.to_numpy(dtype=float))
        runs.append((table["nllh"], table["seconds"]))
        rows.append(
            summarise(
                f"mgjax (Rodas4 + {names[optimiser]})",
                table["nllh"],
                table["converged"],
                table["seconds"],
                args.target,
                dict(compile_seconds=summary["seconds_compile"]),
            )
        )
    n_mgjax = len(rows)
    backends = [] if args.no_peer else ["amici"] + (["amici-jax"] if args.jax_peer else [])
    for backend in backends:
        result = run_peer(
            problem, starts_file, work / f"{backend}.json", args.rtol, args.atol, backend
        )
        if result is None:
            print(
                f"peer {backend}: not run "
                "(make .peer-venv with experiments/benchmarks/setup_petab_peers.sh)"
            )
            continue
        if "error" in result:
            print(f"peer {backend}: {result['error']}")
            rows.append(dict(tool=result.get("tool", backend), error=result["error"]))
            continue
        s = result["starts"]
        runs.append(
            ([np.inf if r["nllh"] is None else r["nllh"] for r in s], [r["seconds"] for r in s])
        )
        rows.append(
            summarise(
                f"pyPESTO + AMICI ({backend}) + fides",
                [np.inf if r["nllh"] is None else r["nllh"] for r in s],
                [bool(r["converged"]) for r in s],
                [r["seconds"] for r in s],
                args.target,
                dict(import_seconds=result.get("import_seconds")),
            )
        )
    # the best NLLH any tool reached in this run, and each tool's time to it (within 0.01)
    measured = [r for r in rows if "best_nllh" in r]
    run_best = min(r["best_nllh"] for r in measured)
    for row, (nllh, seconds) in zip(measured, runs):
        row["seconds_to_run_best"] = seconds_to(nllh, seconds, run_best + 0.01)
    print(f"best NLLH of the run (any tool): {run_best:.4f}")
    frame = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(frame.to_string(index=False))
    peer = rows[n_mgjax] if len(rows) > n_mgjax and "seconds_all_starts" in rows[n_mgjax] else None
    for row in rows[:n_mgjax] if peer else []:
        tool = row["tool"]
        for key, what in (
            ("seconds_to_best", f"time to NLLH ≤ {args.target}"),
            ("seconds_to_run_best", "time to the run's best NLLH"),
            ("seconds_all_starts", "all starts"),
        ):
            if row.get(key) and peer.get(key):
                print(f"{what}: peer / {tool} = {peer[key] / row[key]:.2f}")
            elif row.get(key) and key != "seconds_all_starts":
                print(f"{what}: {tool} {row[key]:.1f} s; the peer did not reach it")
    output = ROOT / "experiments" / "output"
    output.mkdir(parents=True, exist_ok=True)
    (output / "bench_petab.json").write_text(
        json.dumps(
            dict(problem=str(problem.name), seed=args.seed, target=args.target, rows=rows), indent=2
        )
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
