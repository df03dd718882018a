"""The dataset loader: valid data load in model units; every kind of bad input is refused with
one message naming the file, row, column and what to do."""

import textwrap

import numpy as np
import pytest

import mgjax

OBS_HEADER = "subject,protocol,time,time_unit,observable,value,unit"
GOOD_OBSERVATIONS = """\
subject,protocol,time,time_unit,observable,value,unit,sigma
s1,hyperinsulinemic_clamp,0,min,glucose,90,mg/dL,
s1,hyperinsulinemic_clamp,60,min,glucose,5.0,mmol/L,0.2
s1,hyperinsulinemic_clamp,60,min,insulin,100,uU/mL,
s1,fasting,0,min,serum_mg,1.7,mEq/L,
s1,fasting,0,min,urinary_mg_24h,100,mg/day,
s1,fasting,0,min,hba1c,48,mmol/mol,
"""
GOOD_DOSES = """\
subject,protocol,time,time_unit,route,substance,amount,unit,duration
s1,hyperinsulinemic_clamp,0,min,iv,insulin,40,mU/m2/min,120
"""


def _write(tmp_path, observations, doses=None, subjects=None):
    (tmp_path / "observations.csv").write_text(textwrap.dedent(observations))
    if doses is not None:
        (tmp_path / "doses.csv").write_text(textwrap.dedent(doses))
    if subjects is not None:
        (tmp_path / "subjects.csv").write_text(textwrap.dedent(subjects))
    return tmp_path


def test_valid_dataset_loads_in_model_units(tmp_path):
    ds = mgjax.load_dataset(
        _write(tmp_path, GOOD_OBSERVATIONS, GOOD_DOSES, "subject,weight,height\ns1,80,180\n")
    )
    obs = ds.observations.set_index(["protocol", "time", "observable"])["value"]
    np.testing.assert_allclose(
        obs[("hyperinsulinemic_clamp", 0.0, "glucose")], 90 / 18.0156, rtol=1e-4
    )
    np.testing.assert_allclose(obs[("hyperinsulinemic_clamp", 60.0, "insulin")], 600.0)
    np.testing.assert_allclose(obs[("fasting", 0.0, "serum_mg")], 0.85)
    np.testing.assert_allclose(obs[("fasting", 0.0, "urinary_mg_24h")], 100 / 24.305)
    np.testing.assert_allclose(obs[("fasting", 0.0, "hba1c")], 6.543, rtol=1e-3)
    sigma = ds.observations.set_index(["time", "observable"])["sigma"]
    np.testing.assert_allclose(sigma[(60.0, "glucose")], 0.2)
    assert ds.subject_ids == ["s1"]
    assert float(ds.subjects["weight"].iloc[0]) == 80.0


def test_summary_level_rows_use_the_standard_error(tmp_path):
    text = OBS_HEADER + ",sd,n,arm\nrm_mg,mg_trial,16,week,serum_mg,0.74,mmol/L,0.10,32,magnesium\n"
    ds = mgjax.load_dataset(_write(tmp_path, text))
    np.testing.assert_allclose(ds.observations["sigma"].iloc[0], 0.10 / np.sqrt(32))
    np.testing.assert_allclose(ds.observations["time"].iloc[0], 16 * 7 * 1440.0)


@pytest.mark.parametrize(
    "observations, pattern",
    [
        # missing column
        (
            "subject,protocol,time,time_unit,observable,value\ns1,fasting,0,min,glucose,5\n",
            r"observations.csv: missing column\(s\) 'unit'",
        ),
        # unknown observable
        (
            OBS_HEADER + "\ns1,fasting,0,min,glucoze,5,mmol/L\n",
            r"observations.csv, row 2, column 'observable': unknown observable 'glucoze'; use one of",
        ),
        # unknown protocol
        (
            OBS_HEADER + "\ns1,ogtt_3h,0,min,glucose,5,mmol/L\n",
            r"row 2, column 'protocol': unknown protocol 'ogtt_3h'; use one of fasting",
        ),
        # unknown unit
        (
            OBS_HEADER + "\ns1,fasting,0,min,glucose,5,mmol/dL\n",
            r"row 2, column 'unit': unknown unit 'mmol/dL' for glucose; use one of",
        ),
        # unknown time unit
        (
            OBS_HEADER + "\ns1,fasting,0,fortnight,glucose,5,mmol/L\n",
            r"row 2, column 'time_unit': unknown time unit 'fortnight'",
        ),
        # non-numeric value
        (
            OBS_HEADER + "\ns1,fasting,0,min,glucose,5 mmol,mmol/L\n",
            r"row 2, column 'value': '5 mmol' is not a number",
        ),
        # NaN value
        (
            OBS_HEADER
            + "\ns1,fasting,0,min,glucose,5,mmol/L\ns1,fasting,10,min,glucose,NaN,mmol/L\n",
            r"row 3, column 'value': NaN is not a finite number",
        ),
        # empty value
        (
            OBS_HEADER + "\ns1,fasting,0,min,glucose,,mmol/L\n",
            r"row 2, column 'value': empty; give a number",
        ),
        # negative concentration
        (
            OBS_HEADER + "\ns1,fasting,0,min,insulin,-40,pmol/L\n",
            r"row 2, column 'value': -40 is negative; a concentration or amount cannot be negative",
        ),
        # times out of order
        (
            OBS_HEADER
            + "\ns1,hyperglycemic_clamp,10,min,glucose,12,mmol/L\ns1,hyperglycemic_clamp,5,min,glucose,12,mmol/L\n",
            r"row 3, column 'time': times out of order for subject 's1', hyperglycemic_clamp, glucose",
        ),
        # negative time
        (
            OBS_HEADER + "\ns1,fasting,-5,min,glucose,5,mmol/L\n",
            r"row 2, column 'time': negative time",
        ),
        # empty subject
        (
            OBS_HEADER + "\n,fasting,0,min,glucose,5,mmol/L\n",
            r"row 2, column 'subject': empty; give a subject id",
        ),
        # summary row without n
        (
            OBS_HEADER + ",sd\ns1,fasting,0,min,glucose,5,mmol/L,0.5\n",
            r"row 2, column 'n': a summary row \(sd given\) needs the number of subjects",
        ),
        # non-positive sigma
        (
            OBS_HEADER + ",sigma\ns1,fasting,0,min,glucose,5,mmol/L,0\n",
            r"row 2, column 'sigma': 0 must be > 0",
        ),
    ],
)
def test_bad_observations_are_refused(tmp_path, observations, pattern):
    with pytest.raises(mgjax.DatasetError, match=pattern):
        mgjax.load_dataset(_write(tmp_path, observations))


def test_subject_without_observations_is_refused(tmp_path):
    obs = OBS_HEADER + "\ns1,fasting,0,min,glucose,5,mmol/L\n"
    with pytest.raises(
        mgjax.DatasetError,
        match=r"subjects.csv, row 3, column 'subject': subject 's2' has no observations",
    ):
        mgjax.load_dataset(_write(tmp_path, obs, subjects="subject,weight\ns1,70\ns2,80\n"))
    dose = "subject,protocol,time,time_unit,route,substance,amount,unit\ns3,mg_trial,0,day,oral,magnesium,10,mmol\n"
    (tmp_path / "subjects.csv").unlink()
    with pytest.raises(
        mgjax.DatasetError,
        match=r"doses.csv, row 2, column 'subject': subject 's3' has no observations",
    ):
        mgjax.load_dataset(_write(tmp_path, obs, doses=dose))


@pytest.mark.parametrize(
    "doses, pattern",
    [
        (
            "subject,protocol,time,time_unit,route,substance,amount,unit\ns1,fasting,0,min,iv,potassium,1,mmol\n",
            r"doses.csv, row 2, column 'route': unknown dose 'iv' 'potassium'",
        ),
        (
            "subject,protocol,time,time_unit,route,substance,amount,unit\ns1,fasting,0,min,oral,magnesium,1,g\n",
            r"doses.csv, row 2, column 'unit': unit 'g' for oral magnesium; use one of mmol, mg, mEq",
        ),
        (
            "subject,protocol,time,time_unit,route,substance,amount,unit,repeat_every\ns1,fasting,0,min,oral,magnesium,1,mmol,1\n",
            r"doses.csv, row 2, column 'repeat_count': give both repeat_every and repeat_count",
        ),
        (
            "subject,protocol,time,time_unit,route,substance,amount,unit\ns1,fasting,0,min,oral,magnesium,-1,mmol\n",
            r"doses.csv, row 2, column 'amount': -1 is negative",
        ),
    ],
)
def test_bad_doses_are_refused(tmp_path, doses, pattern):
    obs = OBS_HEADER + "\ns1,fasting,0,min,glucose,5,mmol/L\n"
    with pytest.raises(mgjax.DatasetError, match=pattern):
        mgjax.load_dataset(_write(tmp_path, obs, doses=doses))


def test_bad_subject_table_is_refused(tmp_path):
    obs = OBS_HEADER + "\ns1,fasting,0,min,glucose,5,mmol/L\n"
    with pytest.raises(
        mgjax.DatasetError,
        match=r"subjects.csv, row 2, column 'weight': 7 is outside 20–400; give weight in kg",
    ):
        mgjax.load_dataset(_write(tmp_path, obs, subjects="subject,weight\ns1,7\n"))
    with pytest.raises(
        mgjax.DatasetError, match=r"subjects.csv, row 3, column 'subject': subject listed twice"
    ):
        mgjax.load_dataset(_write(tmp_path, obs, subjects="subject,weight\ns1,70\ns1,71\n"))


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(mgjax.DatasetError, match="not a directory"):
        mgjax.load_dataset(tmp_path / "nowhere")
    with pytest.raises(mgjax.DatasetError, match="observations.csv: file not found"):
        mgjax.load_dataset(tmp_path)
    (tmp_path / "observations.csv").write_text(OBS_HEADER + "\n")
    with pytest.raises(mgjax.DatasetError, match="observations.csv: no data rows"):
        mgjax.load_dataset(tmp_path)


def test_dataset_to_experiments_and_protocol(tmp_path):
    ds = mgjax.load_dataset(_write(tmp_path, GOOD_OBSERVATIONS, GOOD_DOSES))
    experiments = mgjax.fit.experiments_for_subject(ds, "s1")
    assert [type(e.protocol).__name__ for e in experiments] == [
        "Fasting",
        "HyperinsulinemicClamp",
    ]
    clamp = experiments[1].protocol
    assert float(clamp.insulin_rate) == 40.0 and not clamp.per_kg
    np.testing.assert_allclose(float(clamp.target_glucose), 5.0)
    fasting = experiments[0]
    assert float(fasting.times[-1]) == 1440.0  # the 24-h urine needs the end of its collection


# --- the fuzzer's findings (hardening issue), one regression test each ------------------------

DOSE_HEADER = "subject,protocol,time,time_unit,route,substance,amount,unit"
ONE_OBS = OBS_HEADER + "\ns1,fasting,0,min,glucose,5,mmol/L\n"


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", r"observations.csv: empty file; the first line must be the header"),
        ("   \n\t\n", r"observations.csv: empty file"),
        ("\n\n\n", r"observations.csv: empty file"),
        (OBS_HEADER + ",value \n", r"row 1: columns 6 and 8 are both named 'value'"),
        (OBS_HEADER + ",unit\t\n", r"row 1: columns 7 and 8 are both named 'unit'"),
        (
            OBS_HEADER + "\ns1,fasting,0,min,glucose,5,mmol/L" + "," * 100_000 + "\n",
            r"row 2: 100007 fields but the header has 7 columns",
        ),
        (
            OBS_HEADER + "\ns1,fasting,0,min,glucose,5,mmol/L,extra\n",
            r"row 2: 8 fields but the header has 7 columns",
        ),
        (
            OBS_HEADER + "\ns1,fasting,0,min,glucose,95,mmol/L\n",
            r"95 mmol/L glucose is implausible .*did you mean mg/dL\?",
        ),
        (
            OBS_HEADER + "\ns1,fasting,0,min,glucose,500,mmol/L\n",
            r"500 mmol/L glucose is implausible",
        ),
        (OBS_HEADER + "\ns1,fasting,0,min,glucose,true,mmol/L\n", r"'true' is not a number"),
        (
            OBS_HEADER + "\ns1,fasting,1e308,day,glucose,5,mmol/L\n",
            r"1e\+308 day is beyond ten years",
        ),
    ],
)
def test_fuzzer_findings_in_observations(tmp_path, text, pattern):
    (tmp_path / "observations.csv").write_text(text)
    with pytest.raises(mgjax.DatasetError, match=pattern) as error:
        mgjax.load_dataset(tmp_path)
    assert all("\n" not in p and len(p) < 400 for p in error.value.problems)


def test_a_folder_in_place_of_a_file_is_refused(tmp_path):
    (tmp_path / "observations.csv").mkdir()
    with pytest.raises(mgjax.DatasetError, match=r"observations.csv: is a folder, not a CSV file"):
        mgjax.load_dataset(tmp_path)


@pytest.mark.parametrize(
    "row, pattern",
    [
        (
            "s1,mg_trial,0,day,oral,magnesium,10,mmol,,,magnesium_unobtainium",
            r"column 'salt': unknown Mg salt 'magnesium_unobtainium'",
        ),
        ("s1,mg_trial,1e308,day,oral,magnesium,10,mmol,,,", r"beyond ten years"),
        (
            "s1,mg_trial,0,day,oral,magnesium,10,mmol,1e308,5,",
            r"repeated less than once in ten years",
        ),
        ("s1,mg_trial,0,day,oral,magnesium,10,mmol,1,0.5,", r"0.5 is not a whole number of doses"),
        ("s1,mg_trial,0,day,oral,magnesium,10,mmol,1,1e29,", r"1e\+29 is not a whole number"),
        (
            "s1,mg_trial,0,day,oral,magnesium,600,mmol,,,",
            r"600 mmol oral magnesium is above the plausible 100 mmol per dose; did you mean mg\?",
        ),
    ],
)
def test_fuzzer_findings_in_doses(tmp_path, row, pattern):
    obs = OBS_HEADER + "\ns1,mg_trial,0,day,serum_mg,0.7,mmol/L\n"
    doses = DOSE_HEADER + ",repeat_every,repeat_count,salt\n" + row + "\n"
    with pytest.raises(mgjax.DatasetError, match=pattern):
        mgjax.load_dataset(_write(tmp_path, obs, doses=doses))


def test_two_dose_sizes_in_one_trial_arm_are_refused(tmp_path):
    obs = OBS_HEADER + "\ns1,mg_trial,0,day,serum_mg,0.7,mmol/L\n"
    doses = (
        DOSE_HEADER
        + "\ns1,mg_trial,0,day,oral,magnesium,10,mmol\ns1,mg_trial,1,day,oral,magnesium,20,mmol\n"
    )
    with pytest.raises(
        mgjax.DatasetError,
        match=r"doses.csv, row 3, column 'amount': subject 's1': its mg_trial arm gives two dose amounts",
    ):
        mgjax.load_dataset(_write(tmp_path, obs, doses=doses))


def test_a_per_minute_infusion_needs_the_weight(tmp_path):
    obs = OBS_HEADER + "\ns1,hyperinsulinemic_clamp,60,min,glucose_infusion,0.4,mmol/min\n"
    doses = DOSE_HEADER + "\ns1,hyperinsulinemic_clamp,0,min,iv,insulin,40,mU/m2/min\n"
    with pytest.raises(
        mgjax.DatasetError, match=r"column 'unit': this conversion needs the subject's body weight"
    ):
        mgjax.load_dataset(_write(tmp_path, obs, doses=doses, subjects="subject,weight\ns1,\n"))
    ds = mgjax.load_dataset(_write(tmp_path, obs, doses=doses, subjects="subject,weight\ns1,80\n"))
    np.testing.assert_allclose(ds.observations["value"].iloc[0], 0.4 * 180.156 / 80, rtol=1e-3)


def test_age_zero_is_valid_and_units_of_covariates_are_named(tmp_path):
    ds = mgjax.load_dataset(_write(tmp_path, ONE_OBS, subjects="subject,age,height\ns1,0,120\n"))
    assert float(ds.subjects["age"].iloc[0]) == 0.0
    with pytest.raises(
        mgjax.DatasetError,
        match=r"1.75 is outside 100–250; give height in cm; did you give it in m\?",
    ):
        mgjax.load_dataset(_write(tmp_path, ONE_OBS, subjects="subject,height\ns1,1.75\n"))


def test_every_problem_is_listed_in_one_pass_and_long_cells_are_cut(tmp_path):
    text = (
        OBS_HEADER
        + "\ns1,fasting,0,min,glucose,NaN,mmol/L"
        + "\ns1,fasting,0,min,"
        + "x" * 2_000_000
        + ",5,mmol/L"
        + "\ns1,fasting,0,min,glucose,5,mmol"
        + "\ns1,fastin,0,min,glucose,5,mmol/L\n"
    )
    with pytest.raises(mgjax.DatasetError) as error:
        mgjax.load_dataset(_write(tmp_path, text, subjects="subject,weight\ns1,7\n"))
    problems = error.value.problems
    assert len(problems) == 5, problems
    assert str(error.value).startswith("5 problems in the dataset:")
    assert any("row 3: not a readable CSV line (field larger than" in p for p in problems)
    assert any("row 5, column 'protocol': unknown protocol 'fastin'" in p for p in problems)
    assert max(len(p) for p in problems) < 400
    assert {p.split(",")[0] for p in problems} == {"observations.csv", "subjects.csv"}


def test_check_lists_every_problem(tmp_path):
    from typer.testing import CliRunner

    from mgjax.app.cli import app

    text = OBS_HEADER + "\ns1,fasting,0,min,glucose,95,mmol/L\ns1,fasting,0,min,serum_mg,x,mmol/L\n"
    result = CliRunner().invoke(app, ["check", "--data", str(_write(tmp_path, text))])
    assert result.exit_code == 2
    assert "2 problems in the dataset" in result.output
    assert "did you mean mg/dL?" in result.output and "'x' is not a number" in result.output
