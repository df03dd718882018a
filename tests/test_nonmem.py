"""NONMEM-style datasets: read back what mgjax writes, and refuse bad files with one clear
message naming file, row and column."""

from __future__ import annotations

import jax.numpy as jnp
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


# --- ADDL / II / SS --------------------------------------------------------------------------

REPEATED = """ID,TIME,DV,MDV,EVID,AMT,CMT,ADDL,II,SS
1,0,.,1,1,100,1,2,12,0
1,1,1.1,0,0,.,2,.,.,.
1,30,0.4,0,0,.,2,0,0,0
2,0,.,1,1,80,1,0,0,0
2,2,1.5,0,0,0,2,0,0,0
"""


@pytest.mark.parametrize("cell", ["0", "0.0", ".", "", " 0 ", "-0"])
def test_empty_or_zero_addl_ii_ss_cells_are_no_additional_dose(tmp_path, cell):
    text = GOOD.replace("CMT,WT,SEX", "CMT,WT,SEX,ADDL,II,SS")
    lines = text.splitlines()
    text = "\n".join([lines[0]] + [f"{line},{cell},{cell},{cell}" for line in lines[1:]]) + "\n"
    data = read_nonmem(_write(tmp_path, text))
    assert data.doses["time"].tolist() == [0.0, 0.0]
    assert not data.doses["additional"].any() and data.doses["addl"].tolist() == [0, 0]
    assert list(data.covariates.columns) == ["wt", "sex"]  # ADDL, II, SS are not covariates


def test_addl_adds_doses_every_ii_after_the_record(tmp_path):
    data = read_nonmem(_write(tmp_path, REPEATED))
    one = data.doses[data.doses["subject"] == "1"]
    assert one["time"].tolist() == [0.0, 12.0, 24.0]
    assert one["amount"].tolist() == [100.0, 100.0, 100.0]
    assert one["additional"].tolist() == [False, True, True]
    assert one["row"].tolist() == [2, 2, 2]  # the added doses point at their record
    assert one["addl"].tolist() == [2, 0, 0] and one["ii"].tolist() == [12.0, 0.0, 0.0]
    assert data.doses["subject"].tolist() == ["1", "1", "1", "2"]


def test_addl_doses_give_the_same_problems_as_explicit_dose_rows(tmp_path):
    explicit = REPEATED.replace("1,0,.,1,1,100,1,2,12,0", "1,0,.,1,1,100,1,0,0,0").replace(
        "1,1,1.1,0,0,.,2,.,.,.\n",
        "1,1,1.1,0,0,.,2,.,.,.\n1,12,.,1,1,100,1,.,.,.\n1,24,.,1,1,100,1,.,.,.\n",
    )
    a, _, _ = one_compartment_problems(read_nonmem(_write(tmp_path, REPEATED, "a.csv")))
    b, _, _ = one_compartment_problems(read_nonmem(_write(tmp_path, explicit, "b.csv")))
    u = jnp.zeros(5)
    for p, q in zip(a, b):
        np.testing.assert_allclose(np.asarray(p.dose_times), np.asarray(q.dose_times))
        np.testing.assert_allclose(np.asarray(p.dose_amounts), np.asarray(q.dose_amounts))
        assert float(p.negative_log_likelihood(u)) == pytest.approx(
            float(q.negative_log_likelihood(u)), rel=1e-12
        )
    assert float(a[0].negative_log_likelihood(u)) != pytest.approx(  # the added doses count
        float(
            one_compartment_problems(
                read_nonmem(_write(tmp_path, REPEATED.replace(",2,12,0", ",0,0,0"), "c.csv"))
            )[0][0].negative_log_likelihood(u)
        )
    )


@pytest.mark.parametrize(
    "old, new, message",
    [
        (",2,12,0", ",2,12,1", "row 2, column 'SS': 1 — steady-state dosing is not supported"),
        (",2,12,0", ",2,0,0", "row 2, column 'II': additional doses (ADDL 2) need the interval"),
        (",2,12,0", ",2,.,0", "II > 0 in TIME's unit, not nothing"),
        (",2,12,0", ",2.5,12,0", "row 2, column 'ADDL': 2.5 is not a whole number"),
        (",2,12,0", ",-1,12,0", "row 2, column 'ADDL': -1 is not a whole number"),
        (",2,12,0", ",1e9,12,0", "row 2, column 'ADDL': 1e+09 additional doses are more than"),
        (",2,12,0", ",2,-12,0", "row 2, column 'II': -12 is negative"),
        (",2,12,0", ",two,12,0", "row 2, column 'ADDL': 'two' is not a number"),
        (
            "1,30,0.4,0,0,.,2,0,0,0",
            "1,30,0.4,0,0,.,2,3,12,0",
            "row 4, column 'ADDL': 3 additional doses on a row that is not a dose (EVID 0)",
        ),
    ],
)
def test_bad_additional_doses_are_refused_by_row_and_column(tmp_path, old, new, message):
    with pytest.raises(DatasetError) as caught:
        read_nonmem(_write(tmp_path, REPEATED.replace(old, new, 1)))
    assert message in str(caught.value), str(caught.value)
    assert str(caught.value).count("pk.csv") == 1  # one problem, one line


def test_infusions_are_refused_unless_asked_for_and_modelled_rates_always(tmp_path):
    text = GOOD.replace("CMT,WT", "CMT,RATE,WT").replace(",1,70,F", ",1,50,70,F", 1)
    text = text.replace(",1,82,M", ",1,0,82,M").replace(",2,70,F", ",2,.,70,F")
    text = text.replace(",2,82,M", ",2,.,82,M")
    with pytest.raises(DatasetError, match=r"row 2, column 'RATE': infusions \(RATE ≠ 0\)"):
        read_nonmem(_write(tmp_path, text))
    data = read_nonmem(_write(tmp_path, text), infusions=True)
    assert data.doses["rate"].tolist() == [50.0, 0.0]
    with pytest.raises(DatasetError, match=r"row 2, column 'RATE': -2 \(a modelled rate"):
        read_nonmem(_write(tmp_path, text.replace(",1,50,70,F", ",1,-2,70,F")), infusions=True)


def test_kept_columns_travel_with_the_events_not_the_covariates(tmp_path):
    text = GOOD.replace("CMT,WT,SEX", "CMT,WT,SEX,PROT")
    lines = text.splitlines()
    text = "\n".join([lines[0]] + [f"{line},fasting" for line in lines[1:]]) + "\n"
    data = read_nonmem(_write(tmp_path, text), keep=("prot",))
    assert set(data.observations["prot"]) == {"fasting"} and set(data.doses["prot"]) == {"fasting"}
    assert "prot" not in data.covariates.columns
    assert data.first_rows == {"1": 2, "2": 5}
    with pytest.raises(DatasetError, match="missing column.*ARM named in the config"):
        read_nonmem(_write(tmp_path, text), keep=("arm",))
