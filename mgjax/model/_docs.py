"""Generated sections of docs/model.md (parameters, states, observables, presets).

The tables are generated from the parameter metadata so that the documentation cannot drift
from the code; `tests/test_docs.py` fails if docs/model.md is stale.
Regenerate with `python -m mgjax.model._docs docs/model.md`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._coupled import OBSERVABLE_UNITS, MgT2DModel
from ._presets import PRESET_CHANGES
from ._therapies import THERAPY_CHANGES

BEGIN = "<!-- BEGIN GENERATED: {name} -->"
END = "<!-- END GENERATED: {name} -->"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def parameter_tables() -> str:
    out = []
    for module, cls in MgT2DModel.submodel_classes.items():
        infos = cls.parameter_infos()
        if not infos:
            continue
        out.append(f"#### `{module}` ({cls.__name__})\n")
        out.append("| parameter | unit | default | range | scale | meaning | source |")
        out.append("|---|---|---|---|---|---|---|")
        for p in infos:
            scale = "log" if p.log_scale else "lin"
            out.append(
                f"| `{p.name}` | {p.unit} | {_fmt(p.default)} | {_fmt(p.lower)}–{_fmt(p.upper)} "
                f"| {scale} | {p.description} | {p.source} |"
            )
        out.append("")
    return "\n".join(out)


def state_table() -> str:
    rows = ["| state | unit | submodel |", "|---|---|---|"]
    for module, cls in MgT2DModel.submodel_classes.items():
        for name, unit in zip(cls.state_names, cls.state_units):
            rows.append(f"| `{name}` | {unit} | {module} |")
    rows.append("| `absorbed_mg_cumulative` | mmol | bookkeeping (absorbed + IV Mg²⁺) |")
    rows.append("| `urinary_mg_cumulative` | mmol | bookkeeping (urinary Mg²⁺) |")
    return "\n".join(rows) + "\n"


def observable_table() -> str:
    rows = ["| observable | unit |", "|---|---|"]
    rows += [f"| `{name}` | {unit} |" for name, unit in OBSERVABLE_UNITS.items()]
    return "\n".join(rows) + "\n"


def preset_table() -> str:
    rows = ["| preset | parameter | value |", "|---|---|---|"]
    for preset, changes in PRESET_CHANGES.items():
        if not changes:
            rows.append(f"| `{preset}` | (all defaults) | |")
        for name, value in changes.items():
            rows.append(f"| `{preset}` | `{name}` | {_fmt(value)} |")
    return "\n".join(rows) + "\n"


def therapy_table() -> str:
    rows = ["| therapy | parameter | value on therapy |", "|---|---|---|"]
    for therapy, changes in THERAPY_CHANGES.items():
        for name, value in changes.items():
            rows.append(f"| `{therapy}` | `{name}` | {_fmt(value)} |")
    return "\n".join(rows) + "\n"


SECTIONS = {
    "parameters": parameter_tables,
    "states": state_table,
    "observables": observable_table,
    "presets": preset_table,
    "therapies": therapy_table,
}


def render(text: str) -> str:
    """`text` with every generated section replaced by its current content."""
    for name, make in SECTIONS.items():
        begin, end = BEGIN.format(name=name), END.format(name=name)
        if begin not in text or end not in text:
            raise ValueError(f"docs lack the markers of the generated section {name!r}")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{make()}{end}{tail}"
    return text


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/model.md")
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {path}")
