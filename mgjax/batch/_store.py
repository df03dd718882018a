"""Batch results on disk: finished subjects are written as they finish, one Parquet *part* per
round, atomically (written to a temporary name, then renamed), so a job killed at any moment
leaves only whole parts. `--resume` reads the parts and skips their subjects. Jobs of one
cohort split by `--shard i/n` (or run as `jax.distributed` processes) write parts named by
their shard into the same or separate run directories; the final tables are assembled from all
parts (`assemble`, `merge`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..fit._laplace import SLOPPY_SE
from ..model._parameters import parameter_infos

#: part-s{i}of{n}-{number}.parquet, or part-s{i}of{n}-w{worker}-{number}.parquet from one of
#: the worker processes that share shard i of n (`mgjax.batch._workers`)
PART_PATTERN = re.compile(r"part-s(\d+)of(\d+)-(?:w\d+-)?(\d+)\.parquet$")
MANIFEST_PATTERN = re.compile(r"shard-(\d+)of(\d+)\.json$")


class RunDirectoryError(RuntimeError):
    """A run directory that cannot be used as asked (exists without --resume, mixed jobs…)."""


def shard_subjects(subjects: Sequence[str], shard: tuple[int, int]) -> list[str]:
    """The subjects of shard i of n: every n-th of the sorted subject ids, starting at i —
    deterministic, and each group spread evenly over the shards."""
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {i}/{n}: need 0 ≤ i < n")
    return sorted(subjects)[i::n]


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' → (i, n)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise ValueError(f"--shard {text!r}: write it as i/n, e.g. 0/4 for the first of four")
    i, n = int(match.group(1)), int(match.group(2))
    if not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: i must be in 0 … n-1")
    return i, n


def check_split(out: Path, shards: Sequence[tuple[int, int]], shard: tuple[int, int]) -> None:
    """Refuse to resume a run directory whose parts come from a finer split of `shard` than
    `shards` (a finer --shard, or worker processes of an earlier version, which split a
    shard statically): their subjects would be fitted twice."""
    parts = out / "parts"
    if not parts.is_dir():
        return
    mine = set(shards)
    i, n = shard
    for path in sorted(parts.glob("part-*.parquet")):
        match = PART_PATTERN.search(path.name)
        if match is None:
            continue
        a, b = int(match.group(1)), int(match.group(2))
        if (a, b) in mine or b % n or a % n != i:
            continue  # ours, or another shard of the job (not this one's subjects)
        raise RunDirectoryError(
            f"{out} holds parts of shard {a}/{b}, a finer split of shard {i}/{n} (a finer "
            "--shard, or the static worker split of an earlier mgjax): its subjects would be "
            f"fitted twice; resume with --shard {a}/{b} (each shard of that split), or choose "
            "another output directory"
        )


class RunStore:
    """The parts of one run directory, for one shard (and one of the worker processes that
    share it, whose parts carry its number: several processes write without a clash)."""

    def __init__(
        self, folder: str | Path, shard: tuple[int, int] = (0, 1), worker: int | None = None
    ):
        self.folder = Path(folder)
        self.parts = self.folder / "parts"
        self.shard = shard
        self.worker = worker
        self._next: int | None = None  # this writer's next part number (counted once)

    def prepare(self, *, resume: bool, subjects: Sequence[str]) -> set[str]:
        """Create the directory; with `resume`, return the subjects already finished. Without
        it, refuse a directory that already holds this shard's parts."""
        self.parts.mkdir(parents=True, exist_ok=True)
        mine = self._my_parts()
        if mine and not resume:
            raise RunDirectoryError(
                f"{self.folder} already holds results of shard {self.shard[0]}/{self.shard[1]}; "
                "pass --resume to continue that job, or choose another output directory"
            )
        finished = set(read_parts(self.folder, shard=self.shard)["subject"]) if mine else set()
        manifest = self.folder / f"shard-{self.shard[0]}of{self.shard[1]}.json"
        manifest.write_text(
            json.dumps(dict(shard=list(self.shard), subjects=list(subjects)), indent=1)
        )
        return finished

    def _my_parts(self) -> list[Path]:
        i, n = self.shard
        return sorted(self.parts.glob(f"part-s{i}of{n}-*.parquet"))

    def _writer_prefix(self) -> str:
        i, n = self.shard
        tag = "" if self.worker is None else f"w{self.worker}-"
        return f"part-s{i}of{n}-{tag}"

    def write(self, frame: pd.DataFrame) -> Path:
        """Write one part atomically (numbered after this writer's earlier parts, which are
        counted at the first write only: each writer has its own prefix)."""
        prefix = self._writer_prefix()
        if self._next is None:
            numbers = [
                int(match.group(3))
                for p in self.parts.glob(f"{prefix}*.parquet")
                if (match := PART_PATTERN.search(p.name)) and p.name[len(prefix)].isdigit()
            ]
            self._next = max(numbers, default=-1) + 1
        path = self.parts / f"{prefix}{self._next:06d}.parquet"
        self._next += 1
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        frame.to_parquet(tmp, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path


def read_parts(folder: str | Path, shard: tuple[int, int] | None = None) -> pd.DataFrame:
    """All finished subjects of a run directory (of one shard, if given)."""
    frames = []
    for path in sorted((Path(folder) / "parts").glob("part-*.parquet")):
        match = PART_PATTERN.search(path.name)
        if match is None:
            continue
        if shard is not None and (int(match.group(1)), int(match.group(2))) != tuple(shard):
            continue
        frames.append(pd.read_parquet(path))
    if not frames:
        return pd.DataFrame(columns=["subject"])
    return pd.concat(frames, ignore_index=True)


class PartsTally:
    """Finished and converged subjects of one shard's parts, read incrementally (each part
    once): `update()` after every round costs only that round's part."""

    def __init__(self, folder: str | Path, shard: tuple[int, int] = (0, 1)):
        i, n = shard
        self.parts = Path(folder) / "parts"
        self.pattern = f"part-s{i}of{n}-*.parquet"
        self.seen: set[str] = set()
        self.subjects = 0
        self.converged = 0

    def update(self) -> tuple[int, int]:
        """(finished subjects, converged subjects) in the parts written so far."""
        for path in sorted(self.parts.glob(self.pattern)):
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            frame = pd.read_parquet(path, columns=["converged"])
            self.subjects += len(frame)
            self.converged += int(frame["converged"].sum())
        return self.subjects, self.converged


def shards_in(folder: str | Path) -> set[tuple[int, int]]:
    """The shards (i, n) that have started in a run directory: their manifests and parts."""
    folder = Path(folder)
    names = [p.name for p in folder.glob("shard-*of*.json")]
    names += [p.name for p in (folder / "parts").glob("part-*.parquet")]
    found = set()
    for name in names:
        match = MANIFEST_PATTERN.fullmatch(name) or PART_PATTERN.fullmatch(name)
        if match is not None:
            found.add((int(match.group(1)), int(match.group(2))))
    return found


def missing_shards(shards: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """The shards of a job that `shards` leave out, each named by the coarsest split (i, n).
    Subject k of the sorted ids is in shard (i, n) iff k ≡ i (mod n), so modulo the least
    common multiple L of the n's the uncovered residues are the missing subjects' classes."""
    size = math.lcm(*(n for _, n in shards)) if shards else 1
    uncovered = set(range(size))
    for i, n in shards:
        uncovered -= set(range(i, size, n))
    missing = []
    for n in (d for d in range(1, size + 1) if size % d == 0):
        for i in range(n):
            members = set(range(i, size, n))
            if uncovered and members <= uncovered:
                missing.append((i, n))
                uncovered -= members
    return missing


def split_tables(wide: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(subjects table, long parameters table) from the wide rows of the parts."""
    wide = wide.sort_values("subject", kind="stable").reset_index(drop=True)
    # the documented columns first (the CLI contract), then the extras
    columns = ["subject", "loss", "converged", "iterations", "status", "group"]
    extras = [c for c in ("starts", "chi2", "n_observations") if c in wide.columns]
    subjects = wide[columns + extras].copy()
    names = [c[len("estimate[") : -1] for c in wide.columns if c.startswith("estimate[")]
    infos = parameter_infos()
    frames = []
    for name in names:
        frames.append(
            pd.DataFrame(
                dict(
                    subject=wide["subject"],
                    group=wide["group"],
                    parameter=name,
                    estimate=wide[f"estimate[{name}]"],
                    se=wide[f"se[{name}]"],
                    ci_low=wide[f"ci_low[{name}]"],
                    ci_high=wide[f"ci_high[{name}]"],
                    se_relative=wide[f"se_relative[{name}]"],
                    unit=infos[name].unit if name in infos else "",
                )
            )
        )
    parameters = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(parameters):
        parameters["identifiable"] = np.isfinite(parameters["se_relative"]) & (
            parameters["se_relative"] <= SLOPPY_SE
        )
        parameters = parameters.sort_values(["subject", "parameter"], kind="stable")
    return subjects, parameters.reset_index(drop=True)


def cohort_summary(parameters: pd.DataFrame, subjects: pd.DataFrame) -> pd.DataFrame:
    """Distribution of the converged subjects' estimates by group and parameter: n, median,
    quartiles, geometric mean and CV (of the log-normal fitted to the estimates)."""
    ok = subjects.loc[subjects["converged"], "subject"]
    frame = parameters[parameters["subject"].isin(set(ok))]
    rows = []
    for (group, name), g in frame.groupby(["group", "parameter"], sort=True):
        x = g["estimate"].to_numpy(dtype=float)
        positive = bool(np.all(x > 0))
        log_sd = float(np.std(np.log(x), ddof=1)) if positive and len(x) > 1 else np.nan
        rows.append(
            dict(
                group=group,
                parameter=name,
                n=len(x),
                median=float(np.median(x)),
                q25=float(np.quantile(x, 0.25)),
                q75=float(np.quantile(x, 0.75)),
                geometric_mean=float(np.exp(np.mean(np.log(x)))) if positive else np.nan,
                cv=float(np.sqrt(np.expm1(log_sd**2))) if np.isfinite(log_sd) else np.nan,
                median_se_relative=float(np.median(g["se_relative"])),
            )
        )
    return pd.DataFrame(rows)


def side_tables(wide: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(loss history: subject, iterations, loss; multistart: subject, start, loss, converged,
    iterations, seconds) from the JSON columns of the parts, where present."""
    history, starts = [], []
    wide = wide.sort_values("subject", kind="stable")
    if "loss_trace" in wide.columns:
        for subject, text in zip(wide["subject"], wide["loss_trace"]):
            if isinstance(text, str):
                for iterations, loss in json.loads(text):
                    history.append(dict(subject=subject, iterations=iterations, loss=loss))
    if "multistart" in wide.columns:
        for subject, text in zip(wide["subject"], wide["multistart"]):
            if isinstance(text, str):
                starts += [dict(subject=subject, **row) for row in json.loads(text)]
    return pd.DataFrame(history), pd.DataFrame(starts)


def write_tables(folder: str | Path, wide: pd.DataFrame, extra: dict | None = None) -> dict:
    """subjects / parameters tables (CSV and Parquet), cohort_summary.csv and summary.json."""
    folder = Path(folder)
    subjects, parameters = split_tables(wide)
    for name, frame in (("subjects", subjects), ("parameters", parameters)):
        frame.to_csv(folder / f"{name}.csv", index=False)
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    summary_table = cohort_summary(parameters, subjects)
    summary_table.to_csv(folder / "cohort_summary.csv", index=False)
    history, starts = side_tables(wide)
    if len(history):
        history.to_csv(folder / "loss_history.csv", index=False)
    if len(starts):
        starts.to_csv(folder / "multistart.csv", index=False)
    counts = subjects["status"].value_counts().to_dict()
    summary = dict(
        subjects=len(subjects),
        converged=int(subjects["converged"].sum()),
        status={str(k): int(v) for k, v in counts.items()},
        median_iterations=float(subjects["iterations"].median()) if len(subjects) else None,
        **(extra or {}),
    )
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _check_shards(folders: Sequence[Path], allow_missing: bool) -> list[str]:
    """The missing shards of the job ('i/n'); refused unless `allow_missing`."""
    found: set[tuple[int, int]] = set()
    for folder in folders:
        found |= shards_in(folder)
    if not found:
        raise RunDirectoryError(
            f"no shard has started in {', '.join(map(str, folders))} (no parts or shard "
            "manifests); nothing to merge"
        )
    missing = [f"{i}/{n}" for i, n in missing_shards(found)]
    if missing and not allow_missing:
        raise RunDirectoryError(
            f"missing shard(s) {', '.join(missing)}: none of the run directories holds their "
            "subjects; fit them (mgjax fit --shard i/n) and merge again, or pass "
            "--allow-missing to merge without them"
        )
    return missing


def merge(folders: Sequence[str | Path], out: str | Path, *, allow_missing: bool = False) -> dict:
    """Assemble the parts of one or several run directories (shards of one job) into `out`:
    checks that no subject appears twice, that every shard's subjects are all finished and
    that no shard is missing altogether (unless `allow_missing`; the summary then lists them
    as `missing_shards`)."""
    out = Path(out)
    folders = [Path(f) for f in folders]
    for folder in folders:
        if not (folder / "parts").is_dir():
            raise RunDirectoryError(f"{folder}: not a batch run directory (no parts/)")
    frames, expected = [], set()
    for folder in folders:
        frames.append(read_parts(folder))
        for manifest in folder.glob("shard-*of*.json"):
            expected.update(json.loads(manifest.read_text())["subjects"])
    wide = pd.concat(frames, ignore_index=True)
    duplicated = wide["subject"][wide["subject"].duplicated()].unique().tolist()
    if duplicated:
        raise RunDirectoryError(
            f"subject(s) {duplicated[:5]} appear in more than one part; merge shards of one job "
            "only, each once"
        )
    absent = _check_shards(folders, allow_missing)
    missing = sorted(expected - set(wide["subject"]))
    if missing:
        raise RunDirectoryError(
            f"{len(missing)} subject(s) not finished (e.g. {missing[:3]}); resume their shard "
            "with --resume before merging"
        )
    out.mkdir(parents=True, exist_ok=True)
    extra: dict = dict(merged_from=[str(f) for f in folders])
    if absent:
        extra["missing_shards"] = absent
    return write_tables(out, wide, extra)
