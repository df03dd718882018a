"""Property-based fuzzing of the dataset boundary (`load_dataset`, hence `mgjax check`):
thousands of generated bad (and good) inputs per run. Each one is either refused with a
`DatasetError` whose every problem is one line naming the file (and row/column where there is
one), or accepted and valid: finite values inside the plausible ranges, times from 0, and every
subject's experiments buildable (so no bad input is accepted here to fail at fit time). Never
another exception, a hang or a silent NaN."""

from __future__ import annotations

import string

import equinox as eqx
import jax
import numpy as np
import pytest
from helpers import time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mgjax
from mgjax.data._units import PLAUSIBLE_RANGES
from mgjax.fit._experiment import experiments_for_subject

OBS = [
    ["subject", "protocol", "time", "time_unit", "observable", "value", "unit"],
    ["s1", "fasting", "0", "min", "glucose", "5.2", "mmol/L"],
    ["s1", "fasting", "0", "min", "serum_mg", "0.8", "mmol/L"],
    ["s1", "hyperinsulinemic_clamp", "60", "min", "glucose", "5.0", "mmol/L"],
    ["s1", "hyperinsulinemic_clamp", "60", "min", "insulin", "600", "pmol/L"],
    ["s2", "mg_trial", "0", "week", "serum_mg", "0.7", "mmol/L"],
    ["s2", "mg_trial", "12", "week", "serum_mg", "0.75", "mmol/L"],
]
DOSES = [
    [
        "subject",
        "protocol",
        "time",
        "time_unit",
        "route",
        "substance",
        "amount",
        "unit",
        "repeat_every",
        "repeat_count",
        "salt",
    ],
    ["s1", "hyperinsulinemic_clamp", "0", "min", "iv", "insulin", "40", "mU/m2/min", "", "", ""],
    ["s2", "mg_trial", "0", "day", "oral", "magnesium", "15", "mmol", "1", "84", "chloride"],
]
SUBJECTS = [
    ["subject", "weight", "height", "age"],
    ["s1", "80", "175", "50"],
    ["s2", "70", "165", "0"],
]
FILES = {"observations.csv": OBS, "doses.csv": DOSES, "subjects.csv": SUBJECTS}

#: Cell values a fuzzer (or a hurried user) puts in: wrong types, non-finite, huge, unit mix-ups.
BAD_CELLS = [
    "",
    " ",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "-1",
    "0",
    "0.5",
    "1e29",
    "true",
    "TRUE",
    "95",
    "500",
    "1e-300",
    "x" * 5000,
    "12 mmol/L",
    "1,5",
    '"',
    "\t",
    "null",
    "None",
    "mg/dL",
    "mmol/mol",
    "µU/mL",
    "days",
    "weeks",
    "year",
    "ivgtt",
    "oral",
    "iv",
    "potassium",
    "glucose ",
    " glucose",
    "GLUCOSE",
    "pidolate",
    "oxide",
    "s3",
    "é",
    "\u0000",
    "🙂",
]


def _render(table: list[list[str]]) -> str:
    return "\n".join(",".join(_quote(c) for c in row) for row in table) + "\n"


def _quote(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"' if any(c in cell for c in ',"\n') else cell


@st.composite
def mutated_tables(draw):
    """The valid dataset with 1–4 random mutations: cells replaced, rows given extra or fewer
    fields, columns renamed, duplicated or dropped, rows removed."""
    tables = {name: [list(r) for r in t] for name, t in FILES.items()}
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(sorted(tables)))
        table = tables[name]
        kind = draw(
            st.sampled_from(
                ["cell", "cell", "cell", "text", "extra", "short", "header", "drop_row", "dup_col"]
            )
        )
        r = draw(st.integers(0, len(table) - 1))
        c = draw(st.integers(0, max(len(table[0]), 1) - 1))
        if kind == "cell" and len(table) > 1 and c < len(table[max(r, 1)]):
            table[max(r, 1)][c] = draw(st.sampled_from(BAD_CELLS))
        elif kind == "text" and c < len(table[r]):
            table[r][c] = draw(st.text(string.printable, max_size=12))
        elif kind == "extra":
            table[r] = table[r] + [""] * draw(st.sampled_from([1, 3, 100_000]))
        elif kind == "short":
            table[r] = table[r][: draw(st.integers(0, len(table[r])))]
        elif kind == "header" and c < len(table[0]):
            table[0][c] = draw(st.sampled_from(["value ", "unit\t", "", "sd", "n", "sigma", "arm"]))
        elif kind == "drop_row" and len(table) > 1:
            del table[max(r, 1)]
        elif kind == "dup_col" and c < len(table[0]):
            table[0].append(table[0][c] + " ")
            for row in table[1:]:
                row.append(row[c] if c < len(row) else "")
    return {name: _render(t) for name, t in tables.items()}


@st.composite
def whole_files(draw):
    """Whole-file damage: empty, blank, binary, a folder in a file's place, one file missing."""
    files: dict[str, object] = {name: _render(t) for name, t in FILES.items()}
    name = draw(st.sampled_from(sorted(files)))
    files[name] = draw(
        st.sampled_from(
            [
                "",
                " ",
                "\n\n\n",
                "\t \n",
                b"\xff\xfe\x00\x01",
                "\ufeff" + _render(FILES[name]),
                "a,b\n1,2\n",
                "FOLDER",
                None,
                _render(FILES[name][:1]),
            ]
        )
    )
    return files


def _write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        path.rmdir() if path.is_dir() else path.unlink()
    for name, content in files.items():
        if content is None:
            continue
        if content == "FOLDER":
            (folder / name).mkdir()
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)
    return folder


def _assert_refused_or_valid(folder):
    with time_limit(20, "load_dataset"):
        try:
            dataset = mgjax.load_dataset(folder)
        except mgjax.DatasetError as e:
            assert e.problems
            for problem in e.problems:
                assert "\n" not in problem, problem
                assert len(problem) <= 400, problem[:500]
                assert (
                    problem.split(",")[0].split(":")[0].endswith(".csv") or str(folder) in problem
                )
            return "refused"
    obs = dataset.observations
    assert np.isfinite(obs["value"]).all() and np.isfinite(obs["time"]).all()
    assert (obs["time"] >= 0).all()
    for name, (lo, hi) in PLAUSIBLE_RANGES.items():
        values = obs.loc[obs["observable"] == name, "value"]
        assert ((values >= lo) & (values <= hi)).all(), (name, values.tolist())
    for column in ("time", "amount"):
        assert np.isfinite(dataset.doses[column].to_numpy(float)).all()
    for subject in dataset.subject_ids:
        for experiment in experiments_for_subject(dataset, subject, averaged_trials=True):
            values = np.asarray(experiment.values)
            assert np.isfinite(values[np.asarray(experiment.mask)]).all()
            protocol = experiment.protocol
            if hasattr(protocol, "target_glucose"):  # NaN: clamp at the subject's own fasting
                protocol = eqx.tree_at(lambda p: p.target_glucose, protocol, 0.0)
            for leaf in jax.tree.leaves(protocol):  # doses, rates, times
                assert np.isfinite(np.asarray(leaf, dtype=float)).all(), experiment.protocol
    return "accepted"


FUZZ = settings(
    max_examples=1600,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.slow
@FUZZ
@given(files=mutated_tables())
def test_mutated_tables_are_refused_clearly_or_valid(tmp_path, files):
    OUTCOMES.append(_assert_refused_or_valid(_write(tmp_path / "data", files)))


OUTCOMES: list[str] = []


def test_the_fuzzer_reaches_both_outcomes():
    """The generated cases are neither all refused nor all accepted (runs after the fuzz test
    above, in the same process)."""
    assert OUTCOMES.count("refused") >= 500, len(OUTCOMES)
    assert OUTCOMES.count("accepted") >= 50, OUTCOMES.count("accepted")


@settings(FUZZ, max_examples=400)
@given(files=whole_files())
def test_damaged_files_are_refused_clearly(tmp_path, files):
    outcome = _assert_refused_or_valid(_write(tmp_path / "data", files))
    damaged_required = files.get("observations.csv") != _render(OBS)
    assert (
        outcome == "refused"
        or not damaged_required
        or files["observations.csv"].startswith("\ufeff")
    )
