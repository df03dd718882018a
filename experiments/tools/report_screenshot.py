"""Open a run's report.html in headless Chromium, screenshot it, and check that its figures
rendered: the page's only coloured pixels are the figures' group colours, so counting them in
the screenshot tells whether the embedded PNGs were drawn.

    python experiments/tools/report_screenshot.py                 # the newest runs/*/report.html
    python experiments/tools/report_screenshot.py runs/20261126-010203

Needs a Chromium binary (Debian: `apt-get install chromium`; or set MGJAX_CHROMIUM); it is a
check of the report, not a dependency of mgjax. Writes experiments/output/report_screenshot.png.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
GROUP_COLOURS = {"healthy": "#1b9e77", "t2dm": "#d95f02", "t2dm_hypomagnesemia": "#7570b3"}


def chromium() -> str | None:
    for name in [os.environ.get("MGJAX_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]:
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def screenshot(page: Path, out: Path, height: int = 9000) -> Path:
    browser = chromium()
    if browser is None:
        sys.exit("no Chromium found: apt-get install chromium (or set MGJAX_CHROMIUM)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                f"--window-size=1280,{height}",
                f"--screenshot={out}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return out


def coloured_pixels(png: Path) -> dict[str, int]:
    """Pixels within a small distance of each group colour."""
    import matplotlib.image as mpimg

    image = mpimg.imread(png)[..., :3]
    if image.dtype != np.float32 and image.max() > 1.0:
        image = image / 255.0
    counts = {}
    for group, hex_colour in GROUP_COLOURS.items():
        rgb = np.array([int(hex_colour[i : i + 2], 16) / 255.0 for i in (1, 3, 5)])
        counts[group] = int(np.sum(np.linalg.norm(image - rgb, axis=-1) < 0.08))
    return counts


def main(run: Path | None = None, out: Path | None = None) -> dict[str, int]:
    if run is None:
        reports = sorted((ROOT / "runs").glob("*/report.html"), key=lambda p: p.stat().st_mtime)
        if not reports:
            sys.exit("no runs/*/report.html; run `mgjax run` first or name a run directory")
        run = reports[-1].parent
    page = Path(run) / "report.html"
    out = out or ROOT / "experiments" / "output" / "report_screenshot.png"
    screenshot(page, out)
    counts = coloured_pixels(out)
    images = page.read_text().count("<img ")
    print(f"{page}: {images} embedded figures; screenshot {out}")
    for group, n in counts.items():
        print(f"  pixels in the {group} colour: {n}")
    ok = sum(counts.values()) > 5000
    print("figures rendered" if ok else "FIGURES MISSING from the rendered page")
    if not ok:
        sys.exit(1)
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    main(args.run, args.out)
