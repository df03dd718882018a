"""NONMEM-style datasets: read back what mgjax writes, and refuse bad files with one clear
message naming file, row and column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mgjax.data import DatasetError, read_nonmem
from mgjax.population import (
    nonmem_table,
    one_compartment_problems,
    simulate_one_compartment_cohort,
)

TYPICAL = dict(ka=1.2, cl=4.0, v=40.0, sigma_additive=0.05, sigma_proportional=0.1)

GOOD = """ID,TIME,DV,MDV,EVID,AMT,CMT,WT,SEX
1,0,.,1,1,100,1,70,F
1,0.5,1.1,0,0,.,2,70,F
1,2,2.0,0,0,.,2,70,F
2,0,.,1,1,100,1,82,M
2,1,1.5,0,0,0,2,82,M
2,4,.,1,0,.,2,82,M
2,8,0.7,0,0,.,2,82,M
2,12,0.3,0,0,.,2,82,M
"""


def _write(tmp_path, text, name="pk.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_a_nonmem_dataset(tmp_path):
    data = read_nonmem(_write(tmp_path, GOOD))
    assert data.subjects == ["1", "2"]
    assert data.observations["value"].tolist() == [1.1, 2.0, 1.5, 0.7, 0.3]  # MDV 1 row left out
    assert data.doses["amount"].tolist() == [100.0, 100.0]
    assert data.covariates.loc["2", "wt"] == 82.0 and data.covariates.loc["1", "sex"] == "F"
    problems, subjects, covariates = one_compartment_problems(data)
    assert subjects == ["1", "2"] and problems[0].times.shape == (3,)  # padded to the largest
    assert list(np.asarray(problems[0].mask)) == [True, True, False]


def test_the_written_table_reads_back_to_the_same_problems(tmp_path):
    problems, weights, _ = simulate_one_compartment_cohort(
        5, typical=TYPICAL, omega_sd=dict(cl=0.3), times=[0.5, 2.0, 8.0], seed=4
    )
    subjects = [f"p{i}" for i in range(5)]
    table = nonmem_table(problems, subjects, pd.DataFrame({"wt": weights}, index=subjects))
    path = tmp_path / "cohort.csv"
    table.to_csv(path, index=False)
    back, ids, covariates = one_compartment_problems(read_nonmem(path))
    assert ids == subjects
    np.testing.assert_allclose(covariates["wt"].to_numpy(), weights)
    for a, b in zip(problems, back):
        np.testing.assert_allclose(np.asarray(a.observed), np.asarray(b.observed), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(a.times), np.asarray(b.times))
        np.testing.assert_allclose(np.asarray(a.dose_amounts), np.asarray(b.dose_amounts))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda t: t.replace(",EVID,", ",EVENT,"),
            "missing column(s) EVID",
        ),
        (
            lambda t: t.replace("1,0,.,1,1,100,1", "1,0,.,0,1,100,1"),
            "row 2, column 'MDV': 0 on a dose (EVID 1)",
        ),
        (
            lambda t: t.replace("1,0,.,1,1,100,1", "1,0,.,1,1,.,1"),
            "row 2, column 'AMT': a dose (EVID 1) needs a positive amount",
        ),
        (
            lambda t: t.replace("1,0.5,1.1,0,0,.,2", "1,0.5,1.1,0,0,.,5"),
            "row 3, column 'CMT': 5 is not an observed compartment",
        ),
        (
            lambda t: t.replace("1,2,2.0,0,0,.,2", "1,0.2,2.0,0,0,.,2"),
            "row 4, column 'TIME': 0.2 is before the subject's previous row",
        ),
        (
            lambda t: t.replace("1,0.5,1.1,0,0,.,2", "1,0.5,.,0,0,.,2"),
            "row 3, column 'DV': an observation (EVID 0, MDV 0) without a value",
        ),
        (
            lambda t: t.replace("2,1,1.5,0,0,0,2", "2,1,1.5,0,3,0,2"),
            "column 'EVID': 3 (a reset) is not supported",
        ),
        (lambda t: t + "1,9,0.4,0,0,.,2,70,F\n", "subject '1' appears again after other subjects"),
        (lambda t: t.replace("1,0.5,1.1,0,0,.,2", "1,0.5,abc,0,0,.,2"), "row 3, column 'DV'"),
    ],
)
def test_bad_nonmem_files_are_refused_by_row_and_column(tmp_path, change, message):
    with pytest.raises(DatasetError) as caught:
        read_nonmem(_write(tmp_path, change(GOOD)))
    assert message in str(caught.value), str(caught.value)
    assert "pk.csv" in str(caught.value)


def test_every_problem_of_a_file_is_listed_at_once(tmp_path):
    text = GOOD.replace("1,0,.,1,1,100,1", "1,0,.,0,1,.,1").replace(
        "2,1,1.5,0,0,0,2", "2,1,1.5,0,0,0,7"
    )
    with pytest.raises(DatasetError) as caught:
        read_nonmem(_write(tmp_path, text))
    assert len(caught.value.problems) == 3, caught.value.problems
