"""Every unit conversion at the data boundary, against hand-computed values."""

import numpy as np
import pytest

import mgjax
from mgjax.data._units import UNITS

# (observable, value in the given unit, unit, value in the model's unit)
CASES = [
    ("glucose", 90.0, "mg/dL", 90.0 / 18.0156),
    ("glucose", 5.0, "mmol/L", 5.0),
    ("glucose", 5.0, "mM", 5.0),
    ("glucose", 900.0, "mg/L", 900.0 / 180.156),
    ("glucose", 0.9, "g/L", 900.0 / 180.156),
    ("serum_mg", 2.0, "mg/dL", 2.0 * 0.411438),
    ("serum_mg", 1.7, "mEq/L", 0.85),
    ("serum_mg", 20.0, "mg/L", 20.0 / 24.305),
    ("serum_mg", 850.0, "µmol/L", 0.85),
    ("serum_mg", 850.0, "umol/L", 0.85),
    ("serum_mg", 0.85, "mmol/L", 0.85),
    ("serum_mg", 0.85, "mM", 0.85),
    ("ionized_mg", 1.1, "mEq/L", 0.55),
    ("intracellular_mg", 0.5, "mmol/L", 0.5),
    ("insulin", 10.0, "µU/mL", 60.0),
    ("insulin", 10.0, "uU/mL", 60.0),
    ("insulin", 10.0, "µIU/mL", 60.0),
    ("insulin", 10.0, "uIU/mL", 60.0),
    ("insulin", 10.0, "mU/L", 60.0),
    ("insulin", 10.0, "mIU/L", 60.0),
    ("insulin", 60.0, "pmol/L", 60.0),
    ("c_peptide", 0.5, "nmol/L", 500.0),
    ("c_peptide", 1.0, "ng/mL", 331.09),
    ("c_peptide", 1.0, "µg/L", 331.09),
    ("c_peptide", 1.0, "ug/L", 331.09),
    ("c_peptide", 500.0, "pmol/L", 500.0),
    ("hba1c", 48.0, "mmol/mol", 6.543),
    ("hba1c", 53.0, "mmol/mol", 7.000),
    ("hba1c", 7.0, "%", 7.0),
    ("urinary_mg", 120.0, "mg/day", 120.0 / 24.305),
    ("urinary_mg", 120.0, "mg/24h", 120.0 / 24.305),
    ("urinary_mg", 10.0, "mEq/day", 5.0),
    ("urinary_mg", 10.0, "mEq/24h", 5.0),
    ("urinary_mg", 4.0, "mmol/24h", 4.0),
    ("urinary_mg", 4.0, "mmol/day", 4.0),
    ("urinary_mg_24h", 120.0, "mg/day", 120.0 / 24.305),
    ("mg_absorption", 4.0, "mmol/day", 4.0),
    ("homa_ir", 2.5, "1", 2.5),
    ("homa_ir", 2.5, "", 2.5),
    ("homa_ir", 2.5, "-", 2.5),
    ("fractional_mg_excretion", 0.035, "1", 3.5),
    ("fractional_mg_excretion", 3.5, "%", 3.5),
    ("glucose_infusion", 8.0, "mg/kg/min", 8.0),
    ("glucose_infusion", 44.4, "µmol/kg/min", 44.4 * 0.180156),
    ("glucose_infusion", 44.4, "umol/kg/min", 44.4 * 0.180156),
    ("m_value", 8.3, "mg/kg/min", 8.3),
    ("m_value", 46.0, "µmol/kg/min", 46.0 * 0.180156),
    ("m_value", 46.0, "umol/kg/min", 46.0 * 0.180156),
    ("insulin_secretion", 0.1, "nmol/min", 100.0),
    ("insulin_secretion", 100.0, "pmol/min", 100.0),
    ("egp", 11.1, "µmol/kg/min", 11.1 * 0.180156),
    ("egp", 2.0, "mg/kg/min", 2.0),
    ("glucose_uptake", 2.0, "mg/kg/min", 2.0),
    ("glucose_uptake", 11.1, "µmol/kg/min", 11.1 * 0.180156),
]


@pytest.mark.parametrize("observable, value, unit, expected", CASES)
def test_conversion(observable, value, unit, expected):
    got = mgjax.to_model_units(observable, value, unit)
    np.testing.assert_allclose(got, expected, rtol=2e-4)
    np.testing.assert_allclose(mgjax.from_model_units(observable, got, unit), value, rtol=1e-12)


def test_every_accepted_unit_is_tested():
    tested = {(o, u) for o, _, u, _ in CASES} | {
        ("glucose_infusion", "mmol/min"),
        ("glucose_infusion", "mg/min"),
    }
    # observables that share one conversion table (serum, ionised and intracellular Mg²⁺;
    # urinary Mg²⁺ rates) are covered by testing the table once
    covered = {(id(UNITS[o]), u) for o, u in tested}
    untested = [
        (o, u) for o, units in UNITS.items() for u in units if (id(units), u) not in covered
    ]
    assert not untested, untested


def test_per_weight_conversions_need_the_body_weight():
    # 3.33 mmol/min of glucose into a 75 kg subject = 8.0 mg/kg/min
    got = mgjax.to_model_units("glucose_infusion", 3.33, "mmol/min", body_weight=75.0)
    np.testing.assert_allclose(got, 3.33 * 180.156 / 75.0)
    np.testing.assert_allclose(
        mgjax.to_model_units("glucose_infusion", 600.0, "mg/min", body_weight=75.0), 8.0
    )
    np.testing.assert_allclose(
        mgjax.from_model_units("glucose_infusion", 8.0, "mg/min", body_weight=75.0), 600.0
    )
    with pytest.raises(mgjax.UnitError, match="body weight"):
        mgjax.to_model_units("glucose_infusion", 3.33, "mmol/min")


def test_unknown_unit_is_refused_with_the_known_units():
    with pytest.raises(mgjax.UnitError, match=r"unknown unit 'mg/mL' for glucose.*mg/dL"):
        mgjax.to_model_units("glucose", 90.0, "mg/mL")


def test_unknown_observable_is_refused():
    with pytest.raises(mgjax.UnitError, match="unknown observable 'glucoze'"):
        mgjax.to_model_units("glucoze", 90.0, "mg/dL")


def test_micro_sign_variants_and_arrays():
    a = mgjax.to_model_units("insulin", [1.0, 2.0], "μU/mL")  # Greek mu, not the micro sign
    np.testing.assert_allclose(a, [6.0, 12.0])
