"""The generated tables in docs/model.md are current."""

import pathlib

from mgjax.model._docs import render

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_model_docs_are_current():
    path = ROOT / "docs" / "model.md"
    text = path.read_text(encoding="utf-8")
    assert render(text) == text, (
        "docs/model.md is stale: run python -m mgjax.model._docs docs/model.md"
    )


def test_architecture_names_every_module():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "mgjax").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        rel = path.relative_to(ROOT).as_posix()
        assert rel in text, f"docs/architecture.md does not describe {rel}"
