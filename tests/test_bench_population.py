"""The population benchmark (experiments/benchmarks/bench_population.py) at a small size: mgjax's
table always; the R `nlme` peer's comparison where `Rscript` with nlme is installed."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import load_experiment

# compiling the population fit's programs takes ~30 s of CPU (40 s on the shared 2-core CPU)
pytestmark = pytest.mark.slow

SIZE = 40
COLUMNS = {
    "subjects",
    "devices",
    "observations",
    "mgjax_compile_s",
    "mgjax_outer_compile_s",
    "mgjax_estimate_s",
    "mgjax_total_s",
    "subjects_per_s",
    "mgjax_peak_rss_mib",
    "mgjax_iterations",
    "mgjax_converged",
    "mgjax_ofv",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The benchmark's mgjax part at one small size, written to a temporary folder."""
    bench = load_experiment("benchmarks/bench_population")
    out = tmp_path_factory.mktemp("bench_population")
    return bench, out, bench.main(["--sizes", str(SIZE), "--no-peer", "--out", str(out)])


def test_mgjax_table_has_its_columns_and_finite_values(run):
    bench, out, result = run
    table = result["table"]
    assert set(table.columns) == COLUMNS
    assert table["subjects"].tolist() == [SIZE]
    numbers = table.drop(columns=["mgjax_converged"]).to_numpy(dtype=float)
    assert np.all(np.isfinite(numbers))
    row = table.iloc[0]
    assert bool(row["mgjax_converged"])
    assert row["observations"] == SIZE * len(bench.TIMES)
    # the warm fit reuses the compiled programs: it is faster than the cold one
    assert row["mgjax_estimate_s"] < row["mgjax_total_s"]
    assert row["subjects_per_s"] == pytest.approx(SIZE / row["mgjax_estimate_s"])
    fitted = result["results"][SIZE]["fitted"]
    assert fitted["same_as_cold"]  # the warm fit is the same fit
    # the estimates compared with the peer: every name, finite, positive SEs
    estimates = result["results"][SIZE]["mgjax"]
    assert set(estimates) == {name for name, _ in bench.COMPARED}
    for value, se in estimates.values():
        assert np.isfinite(value) and np.isfinite(se) and se > 0
    # the table written is the table returned
    written = pd.read_csv(out / "bench_population.csv")
    assert written["mgjax_ofv"].tolist() == pytest.approx(table["mgjax_ofv"].tolist())
    assert json.loads((out / "bench_population.json").read_text())["sizes"][0]["subjects"] == SIZE
    # the CSV is the NONMEM-style file both tools read
    data = pd.read_csv(out / f"pk_{SIZE}.csv")
    assert list(data.columns) == ["ID", "TIME", "DV", "MDV", "EVID", "AMT", "CMT", "WT"]


def test_nlme_peer_agrees_within_the_standard_errors(run):
    bench, out, result = run
    if bench.rscript() is None:
        pytest.skip(
            "Rscript with nlme is not installed (experiments/benchmarks/"
            "setup_population_peer.sh): the nlme peer part is skipped; the mgjax part ran"
        )
    res = result["results"][SIZE]
    raw = bench.fit_nlme(res["csv"], out / "nlme.json")
    assert raw["subjects"] == SIZE and raw["observations"] == SIZE * len(bench.TIMES)
    comparison = bench.compare(res["mgjax"], bench.nlme_estimates(raw))
    assert comparison["within_se"].all(), comparison.to_string()
    # the same objective: −2 log L with all constants (nlme's Lindstrom–Bates fixed point is
    # near, not at, the FOCE optimum, so mgjax's OFV is at most a little lower)
    ofv = float(res["row"]["mgjax_ofv"])
    assert ofv <= raw["minus2loglik"] + 1e-6
    assert raw["minus2loglik"] - ofv < 1.0
