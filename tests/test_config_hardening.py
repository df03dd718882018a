"""Hardening of the run-config loader (`mgjax.app._config`) against a fuzzer's findings: deep
nesting, non-finite numbers, booleans for numbers, pydantic internals in messages, multi-line
or huge messages, and rich swallowing brackets in the command line's help and errors. Then
property-based fuzzing: every generated config (mutated dicts, YAML files, random YAML text) is
either refused with one short `ConfigError` line naming its source, or accepted and valid."""

from __future__ import annotations

import math

import pytest
import typer
import yaml
from helpers import time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mgjax.app import cli
from mgjax.app._config import (
    MAX_VALUES,
    ConfigError,
    RunConfig,
    load_config,
    read_yaml,
    to_yaml,
    validate,
)

NAN, INF = float("nan"), float("inf")
#: pydantic's union-member tags, which must never reach a message.
INTERNALS = ("dict[", "list[", "literal[", "function-", "[key]", "PriorConfig", "Input should")

#: A valid config touching every section, unions included (the fuzzers mutate it).
BASE = {
    "seed": 3,
    "output_dir": "runs",
    "data": {"path": None},
    "model": {"preset": "t2dm", "parameters": {"body_weight": 80}},
    "fit": {
        "free": ["egp_max", "dct_capacity"],
        "priors": {"egp_max": {"median": 1.0, "cv": 0.5}},
        "error_model": {"glucose": {"additive": 0.1, "proportional": 0.03}},
    },
    "solver": {"type": "rodas4", "rtol": 1e-6, "atol": 1e-9, "max_steps": 16384},
    "optimiser": {"name": "lbfgs", "learning_rate": 0.05, "max_steps": 200},
    "multistart": {"starts": 2, "spread": 0.5},
    "batch": {"width": 8, "round_steps": 4, "restarts": 1, "shard": "0/2"},
    "synth": {"n": 10, "groups": {"healthy": 5, "t2dm": 5}},
    "simulate": {
        "presets": ["healthy"],
        "protocols": [
            {"kind": "ivgtt", "every": 2, "duration": 180},
            {"kind": "oral_mg_trial", "weeks": 4, "salt": "chloride"},
        ],
    },
    "report": {"max_subjects": 3},
    "petab": {"starts": 3, "rtol": 1e-6, "optimiser": "fides"},
}


def refused(text: str, tmp_path, name: str = "bad.yaml") -> str:
    """The one-line message `load_config` refuses the YAML `text` with."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert_message(message, str(path))
    return message


def message_problems(message: str, source: str) -> list[str]:
    """What is wrong with a refusal: it must be one short line naming its source, with no
    pydantic internals."""
    problems = []
    if "\n" in message or "\r" in message:
        problems.append("more than one line")
    if len(message) > 400:
        problems.append(f"{len(message)} characters")
    if source not in message:
        problems.append(f"does not name {source}")
    if any(tag in message for tag in INTERNALS):
        problems.append("shows pydantic internals")
    return problems


def assert_message(message: str, source: str) -> None:
    """One line, short, naming its source, with no pydantic internals."""
    assert not message_problems(message, source), (message_problems(message, source), message)


def test_base_config_is_valid():
    assert validate(BASE).simulate.protocols[0].every == 2.0


# --- 1. deep nesting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "seed: " + "[" * 500 + "]" * 500 + "\n",
        "fit:\n  priors: " + "{a: " * 500 + "1" + "}" * 500 + "\n",
        "".join("  " * i + f"k{i}:\n" for i in range(500)),
    ],
    ids=["flow-list", "flow-map", "block-map"],
)
def test_yaml_nested_500_levels_is_refused(tmp_path, text):
    message = refused(text, tmp_path)
    assert "nested" in message


def test_deep_or_huge_mappings_are_refused_before_validation():
    deep: dict = {}
    for _ in range(500):
        deep = {"a": deep}
    with pytest.raises(ConfigError, match=r"^cfg: key 'a\.a\.a.*nested more than"):
        validate(deep, "cfg")
    loop: list = []
    loop.append(loop)  # what `&x [*x]` loads as
    with pytest.raises(ConfigError, match="nested more than"):
        validate({"fit": {"free": loop}}, "cfg")
    with pytest.raises(ConfigError, match=f"more than {MAX_VALUES} values"):
        validate({"model": {"parameters": {f"p{i}": 1.0 for i in range(MAX_VALUES)}}}, "cfg")


def test_alias_bomb_and_recursive_alias_and_deep_override_are_refused(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        bomb += (
            f"{'abcdefghij'[i]}: &{'abcdefghij'[i]} ["
            + ", ".join([f"*{'abcdefghij'[i - 1]}"] * 10)
            + "]\n"
        )
    assert "more than" in refused(bomb, tmp_path)
    assert "nested" in refused("seed: &x [1, *x]\n", tmp_path)
    with pytest.raises(ConfigError) as error:
        load_config(None, ["seed=" + "[" * 2000])
    assert_message(str(error.value), "config")


def test_oversized_and_unreadable_files_are_refused(tmp_path):
    assert "bytes" in refused("seed: 1\n" + "#" * 1_100_000 + "\n", tmp_path)
    assert "not valid YAML" in refused("seed: 2020-13-01\n", tmp_path)  # PyYAML's ValueError
    assert "not valid YAML" in refused("seed: !!timestamp x\n", tmp_path)
    assert "not valid YAML" in refused("seed: 1" + "0" * 5000 + "\n", tmp_path)
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"seed: \xff\n")
    with pytest.raises(ConfigError, match="not a readable YAML text file"):
        read_yaml(path)


# --- 2. NaN, infinity, non-positive ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ("model: {parameters: {body_weight: .nan}}", "model.parameters.body_weight"),
        ("fit: {error_model: {glucose: {additive: .inf}}}", "fit.error_model.glucose.additive"),
        ("fit: {error_model: {glucose: {proportional: .nan}}}", "fit.error_model.glucose"),
        ("fit: {priors: {egp_max: {median: .nan, cv: 0.5}}}", "fit.priors.egp_max.median"),
        ("fit: {priors: {egp_max: {median: 1, cv: -.inf}}}", "fit.priors.egp_max.cv"),
        ("simulate: {protocols: [{kind: ivgtt, every: .inf}]}", "simulate.protocols[0].every"),
        ("simulate: {protocols: [{kind: fasting, duration: .nan}]}", "simulate.protocols[0]"),
        ("solver: {rtol: .nan}", "solver.rtol"),
        ("multistart: {spread: .nan}", "multistart.spread"),
        ("petab: {atol: .inf}", "petab.atol"),
        ("petab: {rtol: nan}", "petab.rtol"),  # the string 'nan' parses as NaN
        ("solver: {atol: 1.0e+400}", "solver.atol"),  # overflows to inf
    ],
)
def test_non_finite_numbers_are_refused_everywhere(tmp_path, text, key):
    message = refused(text + "\n", tmp_path)
    assert f"key '{key}" in message
    assert "finite" in message or "greater than" in message


@pytest.mark.parametrize(
    "text, key",
    [
        ("petab: {rtol: 0}", "petab.rtol"),
        ("petab: {atol: -1e-9}", "petab.atol"),
        ("simulate: {protocols: [{kind: ivgtt, every: 0}]}", "simulate.protocols[0].every"),
        ("fit: {priors: {egp_max: {median: 1, cv: 0}}}", "fit.priors.egp_max.cv"),
        ("fit: {priors: {egp_max: {median: 0, cv: 0.5}}}", "fit.priors.egp_max.median"),
        ("solver: {rtol: 0}", "solver.rtol"),
        ("synth: {groups: {t2dm: -3}}", "synth.groups.t2dm"),
    ],
)
def test_quantities_that_must_be_positive_are(tmp_path, text, key):
    message = refused(text + "\n", tmp_path)
    assert f"key '{key}'" in message and "must be greater than" in message


# --- 3. booleans are not numbers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ("solver: {rtol: true}", "solver.rtol"),
        ("batch: {width: true}", "batch.width"),
        ("seed: false", "seed"),
        ("model: {parameters: {body_weight: true}}", "model.parameters.body_weight"),
        ("synth: {groups: {t2dm: true}}", "synth.groups.t2dm"),
        ("simulate: {protocols: [{kind: ivgtt, every: yes}]}", "simulate.protocols[0].every"),
        ("petab: {starts: true}", "petab.starts"),
    ],
)
def test_booleans_are_refused_where_a_number_is_expected(tmp_path, text, key):
    message = refused(text + "\n", tmp_path)
    assert f"key '{key}' = " in message and "not true/false" in message


def test_integers_and_yaml_strings_still_count_as_numbers():
    cfg = validate(
        {
            "model": {"parameters": {"body_weight": 90}},
            "solver": {"rtol": "1e-7"},  # YAML 1.1 reads 1e-7 as a string
            "simulate": {"protocols": [{"kind": "ivgtt", "every": 3}]},
        }
    )
    assert cfg.model.parameters == {"body_weight": 90.0}
    assert cfg.solver.rtol == 1e-7 and cfg.simulate.protocols[0].every == 3.0
    assert load_config(None, ["solver.rtol=1e-8", "batch.width=16"]).batch.width == 16


# --- 4. the user's key path, not pydantic's ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "fit: {priors: {egp_max: {median: .nan, cv: 0.5}}}",
            "key 'fit.priors.egp_max.median' = nan: must be a finite number",
        ),
        (
            "synth: {groups: [healthy, t2dmm]}",
            "key 'synth.groups[1]': unknown group 't2dmm'; use one of healthy, t2dm, "
            "t2dm_hypomagnesemia",
        ),
        (
            "synth: {groups: {t2dmm: 4}}",
            "key 'synth.groups': unknown group 't2dmm'; use one of healthy, t2dm, "
            "t2dm_hypomagnesemia",
        ),
        ("fit: {priors: rang}", "key 'fit.priors': unknown prior 'rang'; use one of range, none"),
        ("fit: {priors: 5}", "key 'fit.priors' = 5: use a mapping or one of range, none"),
        ("synth: {groups: 5}", "key 'synth.groups' = 5: use a list or a mapping"),
        (
            "optimiser: {name: newton}",
            "key 'optimiser.name': unknown optimiser 'newton'; use one of levenberg_marquardt",
        ),
        ("solver: {type: euler}", "key 'solver.type': unknown solver 'euler'; use one of rodas4"),
        (
            "simulate: {presets: [obese]}",
            "key 'simulate.presets[0]': unknown preset 'obese'; use one of healthy",
        ),
        (
            "simulate: {protocols: [{kind: ivgtt, evry: 2}]}",
            "unknown key 'simulate.protocols[0].evry'; allowed here: name, every",
        ),
        (
            "simulate: {protocols: [{kind: mmtt}]}",
            "key 'simulate.protocols[0].kind': unknown protocol 'mmtt'; use one of",
        ),
        ("simulate: {protocols: [{every: 2}]}", "key 'simulate.protocols[0]' needs a 'kind'"),
        ("model: {parameters: {1: 2.0}}", "key 'model.parameters': the key 1 must be"),
        ("batch: {shard: 3/2}", "key 'batch.shard' = '3/2': i must be in 0"),
    ],
)
def test_messages_use_the_dotted_key_path_and_say_what_to_do(tmp_path, text, expected):
    message = refused(text + "\n", tmp_path)
    assert expected in message, message


# --- 5. one line, never a huge value --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {"seed": "y" * 100_000},
        {"x" * 100_000: 1},
        {"fit": {"free": ["z" * 100_000]}},
        {"batch": {"shard": "9" * 50_000 + "/1"}},
        {"model": {"parameters": {"a\nb\rc\u2028d": 1}}},
        {"solver": {"type": "line one\nline two\n" * 1000}},
        {"data": {"path": list(range(5000))}},
        {"seed": 10**5000},
        {"synth": {"groups": {"t2dm" * 10_000: 1}}},
    ],
    ids=[
        "string",
        "key",
        "parameter",
        "shard",
        "newline-key",
        "newline-value",
        "list",
        "int",
        "group",
    ],
)
def test_messages_are_one_short_line(raw):
    with pytest.raises(ConfigError) as error:
        validate(raw, "cfg.yaml")
    message = str(error.value)
    assert_message(message, "cfg.yaml")
    longest_echo = max(len(run) for run in message.replace("…", " ").split())
    assert longest_echo <= 110, message  # an echoed value is cut to ~60 characters


def test_override_messages_are_short():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["solver.rtol" + "x" * 10_000])
    assert_message(str(error.value), "override")
    with pytest.raises(ConfigError) as error:
        load_config(None, ["seed=" + "q" * 10_000])
    assert_message(str(error.value), "config")


# --- 6. the command line shows brackets as written ---------------------------------------------------


def _flat(output: str) -> str:
    """The output's words on one line (help is wrapped and boxed)."""
    return " ".join(output.replace("│", " ").split())


def test_help_shows_square_brackets():
    runner = CliRunner()
    result = runner.invoke(cli.app, ["simulate", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "simulate.presets=[t2dm]" in _flat(result.output)
    result = runner.invoke(cli.app, ["petab", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert 'pip install "mgjax[petab]"' in _flat(result.output)
    result = runner.invoke(cli.app, ["run", "--help"], env={"COLUMNS": "120"})
    assert "<output_dir>/<timestamp>" in _flat(result.output)


def test_cli_errors_show_square_brackets(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth:\n  groups: [t2dmm]\nsolver:\n  type: '[bold]x[/bold]'\n")
    result = CliRunner().invoke(cli.app, ["fit", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "key 'solver.type': unknown solver '[bold]x[/bold]'" in _flat(result.output)
    bad.write_text("synth:\n  groups: [t2dmm]\n")
    result = CliRunner().invoke(cli.app, ["fit", str(bad), "--out", str(tmp_path / "r")])
    assert "key 'synth.groups[0]': unknown group 't2dmm'" in _flat(result.output)
    with pytest.raises(typer.Exit):
        cli._fail('petab is missing: install the PEtab extra, pip install "mgjax[petab]"')
    assert 'pip install "mgjax[petab]"' in capsys.readouterr().out


# --- fuzzing ------------------------------------------------------------------------------------

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def no_hang(seconds: int = 10):
    """Fail (instead of hanging the suite) when the body runs longer than `seconds`."""
    return time_limit(seconds, "the config loader")


def deep(n: int, leaf=1):
    """A list or mapping nested `n` levels."""
    value = leaf
    for i in range(n):
        value = [value] if i % 2 else {"k": value}
    return value


#: Values a fuzzer puts anywhere.
NASTY = st.one_of(
    st.sampled_from(
        [NAN, INF, -INF, True, False, None, 0, -1, 0.0, -0.0, 1e308, 10**30, "", "nan", "-inf"]
        + ["1e-6", "true", "[t2dm]", "[red]x[/red]", "a\nb", "t2dmm", "range", "ivgtt"]
    ),
    st.floats(),
    st.integers(),
    st.text(max_size=20),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(100, 20_000)),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=5)), max_size=4),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    st.builds(deep, st.integers(1, 40)),
)
KEYS = st.one_of(
    st.sampled_from(["kind", "median", "rtol", "every", "x", ""]), st.text(max_size=12)
)


def mutate(data: st.DataObject, raw: dict) -> dict:
    """`raw` with 1–3 random edits at random depths: a value replaced, a key added or removed."""
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        node = raw
        while True:
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            containers = [k for k, v in children if isinstance(v, dict | list) and v]
            if not containers or data.draw(st.integers(0, 3), label="stop") == 0:
                break
            node = node[data.draw(st.sampled_from(containers), label="into")]
        action = data.draw(st.sampled_from(["replace", "add", "remove"]), label="action")
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if action == "add" and isinstance(node, dict):
            node[data.draw(KEYS, label="key")] = data.draw(NASTY, label="value")
        elif action == "remove" and keys:
            del node[data.draw(st.sampled_from(keys), label="removed")]
        elif keys:
            node[data.draw(st.sampled_from(keys), label="replaced")] = data.draw(
                NASTY, label="value"
            )
    return raw


def config_problems(cfg: RunConfig) -> list[str]:
    """What is wrong with an accepted config: a number that is not finite, or a YAML round
    trip that gives another config."""
    problems = []
    stack = [cfg.model_dump()]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, float) and not math.isfinite(node):
            problems.append(f"non-finite number {node}")
    if RunConfig.model_validate(yaml.safe_load(to_yaml(cfg))) != cfg:
        problems.append("does not round-trip through its YAML")
    return problems


def check(load, source: str) -> tuple[str, list[str]]:
    """(outcome, problems): `load()` either refuses ("refused"; problems of its message) or
    gives a config ("accepted"; problems of the config). Both must come with none."""
    try:
        with no_hang():
            cfg = load()
    except ConfigError as error:
        return "refused", message_problems(str(error), source)
    return "accepted", config_problems(cfg)


#: Outcomes of the mutation fuzz tests (checked by the test after them, same process).
OUTCOMES: list[str] = []


@settings(FUZZ, max_examples=500)
@given(data=st.data())
def test_fuzz_mutated_mappings(data):
    raw = mutate(data, yaml.safe_load(yaml.safe_dump(BASE)))
    outcome, problems = check(lambda: validate(raw, "fuzzed.yaml"), "fuzzed.yaml")
    OUTCOMES.append(outcome)
    assert not problems, (outcome, problems, raw)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(FUZZ, max_examples=400)
@given(data=st.data(), depth=st.integers(1, 600))
def test_fuzz_mutated_yaml_files(fuzz_dir, data, depth):
    raw = mutate(data, yaml.safe_load(yaml.safe_dump(BASE)))
    if data.draw(st.booleans(), label="deep text"):
        raw["seed"] = "DEEPMARKER"
    text = yaml.safe_dump(raw, allow_unicode=data.draw(st.booleans(), label="unicode"))
    text = text.replace("DEEPMARKER", "[" * depth + "]" * depth)
    path = fuzz_dir / "mutated.yaml"
    path.write_text(text, encoding="utf-8")
    outcome, problems = check(lambda: load_config(path), str(path))
    OUTCOMES.append(outcome)
    assert not problems, (outcome, problems, text[:2000])


def test_the_mutation_fuzzers_reach_both_outcomes():
    """The 900 mutated configs above are neither all refused nor all accepted."""
    assert OUTCOMES.count("refused") >= 200, len(OUTCOMES)
    assert OUTCOMES.count("accepted") >= 50, OUTCOMES.count("accepted")


#: Pieces of YAML (and of this schema) that random text is built from.
TOKENS = [
    "seed", "solver", "rtol", "fit", "priors", "free", "median", "simulate", "protocols",
    "kind", "ivgtt", "every", "synth", "groups", "t2dm", "model", "parameters", "petab",
    ": ", ":", " ", "  ", "\n", "\n  ", "- ", "-", "[", "]", "{", "}", ", ", "'", '"', "#",
    "? ", "|", ">", "&a ", "*a", "<<: ", "!!binary ", "!!python/object:os.system ", "!!set ",
    "!!float ", "!!int ", "%YAML 1.1\n", "---\n", "...\n", ".nan", ".inf", "-.inf", "true",
    "null", "~", "1e-6", "1.0e+400", "0x1F", "0o17", "1:2:3", "2020-13-01", "2020-01-01",
    "1" * 40, "\t", "\\", "é", "\u2028", "\x00", "\ufeff",
]  # fmt: skip


@settings(FUZZ, max_examples=400)
@given(
    text=st.one_of(
        st.lists(st.sampled_from(TOKENS), max_size=60).map("".join),
        st.text(max_size=200),
    )
)
def test_fuzz_random_yaml_text(fuzz_dir, text):
    path = fuzz_dir / "random.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        with no_hang():
            read_yaml(path)
    except ConfigError as error:
        assert_message(str(error), str(path))
    outcome, problems = check(lambda: load_config(path), str(path))
    assert not problems, (outcome, problems, text)
