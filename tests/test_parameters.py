"""Parameters: one named, typed place with unit, default, bounds and source."""

import math
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import mgjax

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "model.md"


def test_every_parameter_has_metadata():
    infos = mgjax.parameter_infos()
    assert len(infos) == len(set(infos)) >= 60
    for name, info in infos.items():
        assert info.unit, name
        assert info.source, name
        assert info.description, name
        assert info.lower <= info.default <= info.upper, name
        assert not (info.log_scale and info.lower <= 0), name


def test_parameter_names_are_unique_across_submodels():
    names = [p.name for p in mgjax.MgT2DModel.parameter_infos()]
    assert len(names) == len(set(names))


def test_presets_stay_within_bounds():
    infos = mgjax.parameter_infos()
    for preset in mgjax.preset_names():
        values = mgjax.get_parameters(mgjax.preset(preset))
        for name, value in values.items():
            info = infos[name]
            assert info.lower <= float(value) <= info.upper, (preset, name)


def test_set_and_get_round_trip():
    model = mgjax.set_parameters(mgjax.preset(), gk_s05=8.0, dietary_mg_intake=10.0)
    assert float(mgjax.get_parameter(model, "gk_s05")) == 8.0
    assert float(model.intestinal_magnesium.dietary_mg_intake) == 10.0
    assert float(mgjax.get_parameter(mgjax.preset(), "gk_s05")) == 7.5


def test_unknown_parameter_is_refused_with_the_known_names():
    with pytest.raises(KeyError, match="gk_s05"):
        mgjax.set_parameters(mgjax.preset(), gk_s5=8.0)


def test_unknown_preset_is_refused():
    with pytest.raises(KeyError, match="t2dm_hypomagnesemia"):
        mgjax.preset("diabetic")


def test_parameters_are_float64_leaves():
    model = mgjax.preset("t2dm")
    for value in mgjax.get_parameters(model).values():
        assert isinstance(value, jnp.ndarray) and value.dtype == jnp.float64


def test_parameter_table():
    table = mgjax.parameter_table(mgjax.preset("t2dm"))
    assert list(table.columns[:4]) == ["name", "module", "value", "unit"]
    row = table.set_index("name").loc["signalling_capacity"]
    assert math.isclose(row["value"], mgjax.PRESET_CHANGES["t2dm"]["signalling_capacity"])
    assert np.all(table["lower"] <= table["upper"])


def test_docs_list_every_parameter_and_state():
    text = DOCS.read_text(encoding="utf-8")
    missing = [n for n in mgjax.parameter_names() if f"`{n}`" not in text]
    assert not missing, f"docs/model.md lacks parameters: {missing}"
    missing = [n for n in mgjax.MgT2DModel.state_names() if f"`{n}`" not in text]
    assert not missing, f"docs/model.md lacks states: {missing}"
    missing = [n for n in mgjax.OBSERVABLE_UNITS if f"`{n}`" not in text]
    assert not missing, f"docs/model.md lacks observables: {missing}"
