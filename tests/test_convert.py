"""`mgjax convert`: a NONMEM-style CSV → the native dataset (docs/data.md). Round trips (a
native dataset → a NONMEM table → convert → the same dataset), the config's mapping and its
messages, and refusals that name the NONMEM file's row and column."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mgjax.app._config import ConfigError, validate
from mgjax.app.cli import app
from mgjax.data import DatasetError, convert_nonmem, load_dataset, protocol_from_records
from mgjax.data._dataset import TIME_UNITS

ROOT = pathlib.Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def nonmem_from_native(folder, time_unit, observations, doses, covariates=None):
    """The NONMEM-style table of a native dataset folder (what a user's NONMEM file of the
    same study holds): observations by CMT (`observations`: (observable, unit) → CMT), doses
    by CMT (`doses`: (route, substance, unit) → CMT) with AMT the total, RATE per TIME unit
    and repeats as ADDL/II; `covariates`: subjects.csv column → NONMEM column."""
    minutes = TIME_UNITS[time_unit]
    obs = pd.read_csv(folder / "observations.csv", keep_default_na=False)
    dose_file = folder / "doses.csv"
    dose = pd.read_csv(dose_file, keep_default_na=False) if dose_file.exists() else None
    subjects = (
        pd.read_csv(folder / "subjects.csv", dtype=str, keep_default_na=False).set_index("subject")
        if (folder / "subjects.csv").exists()
        else None
    )
    events = []
    for _, r in obs.iterrows():
        t = float(r["time"]) * TIME_UNITS[r["time_unit"]] / minutes
        cmt = observations[(r["observable"], r["unit"])]
        events.append(
            dict(
                ID=r["subject"],
                TIME=t,
                DV=r["value"],
                MDV=0,
                EVID=0,
                AMT=".",
                RATE=".",
                CMT=cmt,
                ADDL=".",
                II=".",
                PROT=r["protocol"],
            )
        )
    for _, r in dose.iterrows() if dose is not None else []:
        t = float(r["time"]) * TIME_UNITS[r["time_unit"]] / minutes
        amount = float(r["amount"])
        duration = float(r["duration"]) if r.get("duration", "") != "" else math.nan
        if r["unit"].endswith("/min"):  # a rate per min: AMT the total, RATE per TIME unit
            amt, rate = amount * duration, amount * minutes
        else:
            amt = amount
            rate = amount / (duration / minutes) if not math.isnan(duration) else 0.0
        count = r.get("repeat_count", "")
        addl, ii = (int(count) - 1, float(r["repeat_every"])) if count != "" else (0, 0.0)
        events.append(
            dict(
                ID=r["subject"],
                TIME=t,
                DV=".",
                MDV=1,
                EVID=1,
                AMT=amt,
                RATE=rate,
                CMT=doses[(r["route"], r["substance"], r["unit"])],
                ADDL=addl,
                II=ii,
                PROT=r["protocol"],
            )
        )
    order = list(dict.fromkeys(obs["subject"]))
    events.sort(key=lambda e: (order.index(e["ID"]), e["TIME"], -e["EVID"]))
    table = pd.DataFrame(events)
    for column, name in (covariates or {}).items():
        table[name] = [subjects.loc[s, column] for s in table["ID"]]
    return table


def compare_datasets(a, b):
    """Two loaded datasets hold the same measurements, dose records and subjects."""
    keys = ["subject", "protocol", "observable", "time"]
    oa = a.observations.sort_values(keys).reset_index(drop=True)
    ob = b.observations.sort_values(keys).reset_index(drop=True)
    for column in ("subject", "protocol", "observable"):
        assert oa[column].tolist() == ob[column].tolist()
    np.testing.assert_allclose(ob["time"], oa["time"], rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(ob["value"], oa["value"], rtol=1e-13, atol=0)
    keys = ["subject", "protocol", "route", "substance", "time"]
    da = a.doses.sort_values(keys).reset_index(drop=True)
    db = b.doses.sort_values(keys).reset_index(drop=True)
    assert len(da) == len(db)
    for column in ("subject", "protocol", "route", "substance", "unit"):
        assert da[column].tolist() == db[column].tolist()
    for column in ("time", "amount", "duration", "repeat_every", "repeat_count"):
        np.testing.assert_allclose(
            db[column].to_numpy(float), da[column].to_numpy(float), rtol=1e-13, equal_nan=True
        )
    if "salt" in da.columns:
        assert da["salt"].tolist() == db["salt"].tolist()


def test_a_simulated_clamp_dataset_round_trips_through_nonmem(tmp_path):
    """`mgjax simulate` (a clamp: glucose, insulin, GIR and the insulin infusion) → NONMEM
    table → `mgjax convert` → the same dataset, and `mgjax check` accepts it."""
    sim = tmp_path / "sim"
    result = invoke(
        "simulate",
        ROOT / "configs" / "hyperinsulinemic_clamp_fit.yaml",
        "simulate.presets=[healthy,t2dm]",
        "--out",
        sim,
    )
    assert result.exit_code == 0, result.output
    native = tmp_path / "native"
    native.mkdir()
    (native / "observations.csv").write_text((sim / "trajectories.csv").read_text())
    (native / "doses.csv").write_text((sim / "doses.csv").read_text())
    observations = {
        ("glucose", "mmol/L"): 2,
        ("insulin", "pmol/L"): 3,
        ("glucose_infusion", "mg/kg/min"): 4,
    }
    doses = {("iv", "insulin", "mU/m2/min"): 1}
    table = nonmem_from_native(native, "min", observations, doses).drop(columns="PROT")
    table.to_csv(tmp_path / "clamp.csv", index=False)
    config = dict(
        convert=dict(
            protocol="hyperinsulinemic_clamp",
            time_unit="min",
            observations={c: dict(observable=o, unit=u) for (o, u), c in observations.items()},
            doses={c: dict(route=r, substance=s, unit=u) for (r, s, u), c in doses.items()},
        )
    )
    (tmp_path / "convert.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    out = tmp_path / "converted"
    result = invoke(
        "convert", tmp_path / "clamp.csv", "--config", tmp_path / "convert.yaml", "--out", out
    )
    assert result.exit_code == 0, result.output
    assert "2 subjects (150 observations, 2 dose records)" in result.output
    compare_datasets(load_dataset(native), load_dataset(out))
    written = pd.read_csv(out / "doses.csv")
    assert written[["amount", "duration"]].to_numpy().tolist() == [[40.0, 120.0]] * 2
    assert invoke("check", "--data", out).exit_code == 0
    # a used folder is refused, and replaced with --force
    again = invoke(
        "convert", tmp_path / "clamp.csv", "--config", tmp_path / "convert.yaml", "--out", out
    )
    assert again.exit_code == 2 and "exists and is not empty" in again.output
    again = invoke(
        "convert",
        tmp_path / "clamp.csv",
        "--config",
        tmp_path / "convert.yaml",
        "--out",
        out,
        "--force",
    )
    assert again.exit_code == 0, again.output


TRIAL_OBSERVATIONS = """subject,protocol,time,time_unit,observable,value,unit
a1,mg_trial,0,h,serum_mg,1.65,mg/dL
a1,mg_trial,0,h,glucose,142.5,mg/dL
a1,mg_trial,0,h,insulin,12.25,µU/mL
a1,mg_trial,2688,h,serum_mg,1.80,mg/dL
a1,mg_trial,2688,h,glucose,128.125,mg/dL
a1,mg_trial,2688,h,insulin,10.5,µU/mL
p2,mg_trial,0,h,serum_mg,0.66,mmol/L
p2,mg_trial,2688,h,serum_mg,0.6525,mmol/L
c3,hyperinsulinemic_clamp,0,h,glucose,5.1,mmol/L
c3,hyperinsulinemic_clamp,0.5,h,glucose,4.875,mmol/L
c3,hyperinsulinemic_clamp,1,h,glucose,5.0125,mmol/L
c3,hyperinsulinemic_clamp,2,h,glucose_infusion,6.3,mg/kg/min
"""
TRIAL_DOSES = """subject,protocol,time,time_unit,route,substance,amount,unit,duration,repeat_every,repeat_count,salt
a1,mg_trial,8,h,oral,magnesium,450,mg,,24,112,chloride
a1,mg_trial,12,h,iv,magnesium,8,mmol,30,,,
c3,hyperinsulinemic_clamp,0,h,iv,insulin,40,mU/m2/min,120,,,
"""
TRIAL_SUBJECTS = """subject,weight,height,sex,group
a1,82.5,175,F,t2dm
p2,70,162,M,t2dm_hypomagnesemia
c3,95.25,181,M,t2dm
"""
TRIAL_MAP = dict(
    observations={
        ("serum_mg", "mg/dL"): 2,
        ("serum_mg", "mmol/L"): 3,
        ("glucose", "mg/dL"): 4,
        ("insulin", "µU/mL"): 5,
        ("glucose", "mmol/L"): 6,
        ("glucose_infusion", "mg/kg/min"): 7,
    },
    doses={
        ("oral", "magnesium", "mg"): 1,
        ("iv", "magnesium", "mmol"): 8,
        ("iv", "insulin", "mU/m2/min"): 9,
    },
)


def _trial(tmp_path):
    """A hand-made native dataset (two protocols; TIME in h; repeated oral Mg²⁺ with a salt, an
    iv Mg²⁺ infusion, a clamp's insulin rate; covariates), its NONMEM table and mapping."""
    native = tmp_path / "native"
    native.mkdir()
    (native / "observations.csv").write_text(TRIAL_OBSERVATIONS)
    (native / "doses.csv").write_text(TRIAL_DOSES)
    (native / "subjects.csv").write_text(TRIAL_SUBJECTS)
    covariates = dict(weight="WT", height="HT", sex="SEX", group="GROUP")
    table = nonmem_from_native(
        native, "h", TRIAL_MAP["observations"], TRIAL_MAP["doses"], covariates
    )
    table.to_csv(tmp_path / "trial.csv", index=False)
    mapping = dict(
        observations={
            c: dict(observable=o, unit=u) for (o, u), c in TRIAL_MAP["observations"].items()
        },
        doses={
            c: dict(route=r, substance=s, unit=u) | (dict(salt="chloride") if c == 1 else {})
            for (r, s, u), c in TRIAL_MAP["doses"].items()
        },
        protocol_column="PROT",
        time_unit="h",
        covariates=dict(WT="weight", HT="height"),
    )
    return native, tmp_path / "trial.csv", mapping


def test_a_hand_made_dataset_round_trips_through_nonmem(tmp_path):
    native, csv, mapping = _trial(tmp_path)
    table = pd.read_csv(csv, keep_default_na=False)
    assert table[table["CMT"] == 9][["AMT", "RATE"]].astype(float).to_numpy().tolist() == [
        [4800.0, 2400.0]
    ]
    assert table[table["CMT"] == 1][["ADDL", "II"]].astype(float).to_numpy().tolist() == [
        [111, 24.0]
    ]
    dataset = convert_nonmem(csv, tmp_path / "out", **mapping)
    compare_datasets(load_dataset(native), dataset)
    compare_datasets(load_dataset(native), load_dataset(tmp_path / "out"))
    subjects = pd.read_csv(tmp_path / "out" / "subjects.csv", keep_default_na=False)
    assert subjects.to_csv(index=False) == pd.read_csv(
        native / "subjects.csv", keep_default_na=False
    ).to_csv(index=False)
    doses = pd.read_csv(tmp_path / "out" / "doses.csv", keep_default_na=False)
    assert doses["repeat_count"].tolist() == ["112", "", ""]  # one record, not 112
    assert doses["salt"].tolist() == ["chloride", "", ""]


def test_the_converted_dataset_builds_the_same_protocols(tmp_path):
    """The converted trial's dose records give the same protocols as the native original's."""
    native, csv, mapping = _trial(tmp_path)
    a, b = load_dataset(native), convert_nonmem(csv, tmp_path / "out", **mapping)

    def built(d, subject, protocol):
        return protocol_from_records(
            protocol,
            d.doses[(d.doses["subject"] == subject) & (d.doses["protocol"] == protocol)],
            d.observations[d.observations["subject"] == subject],
        )

    ta, tb = built(a, "a1", "mg_trial"), built(b, "a1", "mg_trial")
    assert np.asarray(tb.dose_times).shape == (112,)
    np.testing.assert_allclose(np.asarray(tb.dose_times), np.asarray(ta.dose_times), rtol=1e-13)
    for name in ("dose", "bioavailability"):
        assert float(getattr(tb, name)) == pytest.approx(float(getattr(ta, name)), rel=1e-13)
    ca, cb = built(a, "c3", "hyperinsulinemic_clamp"), built(b, "c3", "hyperinsulinemic_clamp")
    for name in ("insulin_rate", "target_glucose", "duration"):
        assert float(getattr(cb, name)) == pytest.approx(float(getattr(ca, name)), rel=1e-13)
    assert float(cb.insulin_rate) == 40.0


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(protocol="mg_trial"), "convert.protocol (one for every row"),
        (dict(protocol_column=None), "not both or neither"),
        (dict(observations={}), "convert.observations maps no compartment"),
        (dict(covariates=dict(BW="weight")), "convert.covariates names 'BW', not a covariate"),
        (dict(covariates=dict(WT="weight", HT="weight")), "column 'weight' twice"),
        (dict(time_unit="fortnight"), "convert.time_unit: unknown time unit 'fortnight'"),
    ],
)
def test_a_mapping_that_cannot_be_used_is_refused(tmp_path, change, message):
    _, csv, mapping = _trial(tmp_path)
    with pytest.raises(DatasetError) as caught:
        convert_nonmem(csv, tmp_path / "out", **(mapping | change))
    assert message in str(caught.value), str(caught.value)
    assert "trial.csv" in str(caught.value) and not (tmp_path / "out").exists()


def test_native_problems_are_named_by_the_nonmem_row_and_column(tmp_path):
    _, csv, mapping = _trial(tmp_path)
    table = pd.read_csv(csv, keep_default_na=False, dtype=str)
    glucose = table.index[table["CMT"] == "4"][0]
    table.loc[glucose, "DV"] = "1425"  # a typing error: 1425 mg/dL
    table.loc[table["ID"] == "p2", "HT"] = "1.62"  # in m
    infusion = table.index[table["CMT"] == "8"][0]
    table.loc[infusion, "AMT"] = "400"  # 400 mmol of iv Mg²⁺: mg, surely
    table.to_csv(csv, index=False)
    with pytest.raises(DatasetError) as caught:
        convert_nonmem(csv, tmp_path / "out", **mapping)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    row = lambda k: k + 2  # noqa: E731 - spreadsheet rows: header = row 1
    first_p2 = table.index[table["ID"] == "p2"][0]
    assert any(
        p.startswith(
            f"trial.csv, row {row(glucose)}, column 'DV': 1425 mg/dL glucose is implausible"
        )
        for p in problems
    ), problems
    assert any(
        p.startswith(f"trial.csv, row {row(first_p2)}, column 'HT': 1.62 is outside 100–250")
        and "did you give it in m?" in p
        for p in problems
    ), problems
    assert any(
        p.startswith(f"trial.csv, row {row(infusion)}, column 'AMT': 400 mmol iv magnesium")
        and "did you mean mg?" in p
        for p in problems
    ), problems
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.replace(",2400.0,9,", ",0.0,9,"),
            "column 'RATE': a dose in mU/m2/min is an infusion",
        ),
        (
            lambda t: t.replace(",.,6,", ",.,11,", 1),
            "column 'CMT': 11 is not an observed compartment; use 2 (serum_mg)",
        ),
        (
            lambda t: t.replace(",450.0,0.0,1,", ",450.0,0.0,12,"),
            "column 'CMT': a dose into compartment 12; doses go into 1, 8, 9 — map others in `convert.doses`",
        ),
        (
            lambda t: t.replace(",mg_trial,", ",mmtt,", 1),
            "column 'PROT': unknown protocol 'mmtt'",
        ),
    ],
)
def test_nonmem_refusals_point_at_the_convert_section(tmp_path, edit, message):
    _, csv, mapping = _trial(tmp_path)
    text = csv.read_text()
    assert edit(text) != text
    csv.write_text(edit(text))
    with pytest.raises(DatasetError) as caught:
        convert_nonmem(csv, tmp_path / "out", **mapping)
    assert message in str(caught.value), str(caught.value)
    assert str(caught.value).startswith("trial.csv, row "), str(caught.value)


@pytest.mark.parametrize(
    "section, message",
    [
        (
            {"observations": {2: {"observable": "glucse", "unit": "mmol/L"}}},
            "CMT 2: unknown observable 'glucse'; did you mean glucose",
        ),
        (
            {"observations": {2: {"observable": "glucose", "unit": "mg/dl"}}},
            "CMT 2: unit 'mg/dl' for glucose; use one of mmol/L, mM, mg/dL",
        ),
        (
            {"doses": {1: {"route": "oral", "substance": "insulin", "unit": "U"}}},
            "CMT 1: unknown dose 'oral' 'insulin'; use one of iv insulin",
        ),
        (
            {"doses": {1: {"route": "oral", "substance": "magnesium", "unit": "g"}}},
            "unit 'g' for oral magnesium; use one of mmol, mg, mEq",
        ),
        (
            {
                "doses": {
                    1: {"route": "iv", "substance": "magnesium", "unit": "mg", "salt": "oxide"}
                }
            },
            "a salt for iv magnesium; only oral magnesium takes a salt",
        ),
        (
            {
                "doses": {
                    1: {"route": "oral", "substance": "magnesium", "unit": "mg", "salt": "gold"}
                }
            },
            "unknown Mg salt 'gold'; use one of chloride",
        ),
        (
            {"observations": {0: {"observable": "glucose", "unit": "mM"}}},
            "NONMEM compartments (CMT) are numbered from 1",
        ),
        ({"protocol": "clamp"}, "unknown protocol 'clamp'; use one of fasting"),
        ({"time_unit": "hrs"}, "unknown time unit 'hrs'"),
        (
            {"observations": {2: {"observable": "glucose"}}},
            "key 'convert.observations.2.unit' is required",
        ),
        ({"mapping": {}}, "unknown key 'convert.mapping'; allowed here: protocol"),
    ],
)
def test_the_convert_section_is_validated_with_one_message(section, message):
    with pytest.raises(ConfigError) as caught:
        validate({"convert": section}, "c.yaml")
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_the_shipped_example_converts_a_trial(tmp_path):
    csv = tmp_path / "trial.csv"
    csv.write_text(
        "ID,TIME,DV,MDV,EVID,AMT,CMT,ADDL,II,SS,WT,HT\n"
        "1,0,.,1,1,450,1,111,1,0,82,175\n"
        "1,0,0.68,0,0,.,2,.,.,.,82,175\n"
        "1,0,142,0,0,.,3,0,0,0,82,175\n"
        "1,112,0.74,0,0,.,2,0,0,0,82,175\n"
        "1,112,12.5,0,0,.,4,0,0,0,82,175\n"
    )
    out = tmp_path / "out"
    result = invoke(
        "convert", csv, "--config", ROOT / "configs" / "convert_nonmem.yaml", "--out", out
    )
    assert result.exit_code == 0, result.output
    dataset = load_dataset(out)
    assert dataset.doses["repeat_count"].tolist() == [112.0]
    assert dataset.doses["repeat_every"].tolist() == [1440.0]  # 1 day, in min
    assert dataset.subjects["weight"].tolist() == [82.0]
    obs = dataset.observations.set_index("observable")
    assert obs.loc["glucose", "value"] == pytest.approx(142 / 18.0156, rel=1e-3)  # mg/dL
    assert (out / "config.yaml").exists()
    missing = invoke(
        "convert",
        tmp_path / "none.csv",
        "--config",
        ROOT / "configs" / "convert_nonmem.yaml",
        "--out",
        tmp_path / "o2",
    )
    assert missing.exit_code == 2 and "no such NONMEM-style CSV file" in missing.output
    bad = invoke("convert", csv, "--out", tmp_path / "o3")  # the built-in config maps nothing
    assert bad.exit_code == 2 and "convert.observations maps no compartment" in bad.output
    assert not (tmp_path / "o3").exists()


def test_convert_has_help_with_an_example():
    result = invoke("convert", "--help")
    assert result.exit_code == 0 and "Example" in result.output
    assert "mgjax convert study.csv --config" in result.output
