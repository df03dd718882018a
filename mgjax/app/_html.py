"""What every run's report is made of: matplotlib (loaded on first use), figures and tables as
HTML, one self-contained page. Shared by the fit report (`_report`) and `mgjax petab`."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;border-bottom:1px solid #ddd;margin-top:1.6em}
figure{margin:1em 0} img{max-width:100%} figcaption{font-size:.85em;color:#555}
table.t{border-collapse:collapse;font-size:.8em} table.t td,table.t th{padding:2px 8px;
border-bottom:1px solid #eee;text-align:right} pre{background:#f6f6f6;padding:.6em;
font-size:.8em;overflow-x:auto}
"""


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (files only, no display)."""
    # lazy: matplotlib costs CLI start-up time, and only runs that draw need it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, *, dpi: int = 100, rect=None, tight: bool = True) -> bool:
    """Lay out `fig` (`tight`: matplotlib's tight layout, seconds for a large grid of axes;
    else as the caller placed them), write it to `path` as PNG at `dpi` and close it; True
    (the figure functions' "drawn" answer)."""
    if tight:
        fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return True


def figure_html(path: Path, caption: str) -> str:
    """A PNG embedded as a data URI, with its caption."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def table_html(frame: pd.DataFrame, rows: int = 60) -> str:
    """The first `rows` rows of `frame` as an HTML table (and how many more the CSV holds)."""
    shown = frame.head(rows)
    text = shown.to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0, classes="t")
    more = f"<p>… {len(frame) - rows} more rows in the CSV.</p>" if len(frame) > rows else ""
    return text + more


def page_head(title: str, heading: str) -> list[str]:
    """The start of a report page: its title, style and heading."""
    return [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(heading)}</h1>",
    ]


def section_html(caption: str, body: str) -> list[str]:
    """One titled section of a report page."""
    return [f"<h2>{html.escape(caption)}</h2>", body]


def environment_html(env: dict) -> list[str]:
    """The run's environment.json as a report section."""
    return section_html("Environment", f"<pre>{html.escape(json.dumps(env, indent=1))}</pre>")


def write_page(path: Path, parts: list[str]) -> Path:
    """Close the page and write it."""
    path.write_text("\n".join([*parts, "</body></html>"]), encoding="utf-8")
    return path
