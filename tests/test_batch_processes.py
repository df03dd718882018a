"""Batch fitting across processes and devices, all through the command line in subprocesses
sharing one compilation cache: a job killed with SIGKILL and resumed gives the uninterrupted
table; 4 forced host devices give the 1-device numbers; two `jax.distributed` processes split a
cohort and process 0 merges it."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from mgjax import batch
from mgjax.app.cli import default_cohort_path

SUBJECTS = ["s0000", "s0001", "s0008", "s0009"]
pytestmark = pytest.mark.slow


def _subset(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("observations", "doses", "subjects"):
        frame = pd.read_csv(default_cohort_path() / f"{name}.csv")
        frame[frame["subject"].isin(SUBJECTS)].to_csv(folder / f"{name}.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _subset(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A persistent compilation cache shared by this module's subprocesses only (the batch
    program is cacheable), so later processes skip the XLA compile of the same program."""
    return tmp_path_factory.mktemp("jax-cache")


def _env(cache, devices: int = 1):
    """The subprocesses' environment: this module's cache, the tests' cheap XLA settings
    (conftest.py), `devices` forced host devices."""
    flags = os.environ.get("XLA_FLAGS", "")
    if devices > 1:
        flags += f" --xla_force_host_platform_device_count={devices}"
    return dict(
        os.environ, MGJAX_COMPILATION_CACHE="1", MGJAX_CACHE_DIR=str(cache), XLA_FLAGS=flags
    )


class Reference:
    """The uninterrupted job's tables (`mgjax fit` in a subprocess; it also fills the
    module's compilation cache for the later processes)."""

    def __init__(self, folder):
        self.parameters = pd.read_csv(folder / "parameters.csv")
        self.subjects = pd.read_csv(folder / "subjects.csv")


@pytest.fixture(scope="module")
def reference(data, cache, tmp_path_factory):
    """The uninterrupted job, on 4 forced host devices (lanes sharded 4 ways, width 4). The
    distributed processes run on 1 device each and compare with it (4 devices = 1 device); the
    killed and resumed job runs on 4 devices and compares with it (resume = uninterrupted)."""
    out = tmp_path_factory.mktemp("four_devices") / "run"
    script = textwrap.dedent(
        f"""
        import jax, mgjax
        from mgjax import batch
        from mgjax.synth._cohort import COHORT_PARAMETERS, cohort_error_models
        from mgjax.runtime._compilation_cache import enable_compilation_cache
        enable_compilation_cache()
        assert len(jax.local_devices()) == 4, jax.local_devices()
        ds = mgjax.load_dataset({str(data)!r})
        errors = cohort_error_models(sorted(ds.observations["observable"].unique()))
        batch.fit_batch(ds, COHORT_PARAMETERS, {str(out)!r},
                        settings=batch.BatchSettings(width=4), error_models=errors)
        """
    )
    env = _env(cache, devices=4)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    result = Reference(out)
    assert result.subjects["converged"].all()
    return result


def _fit_command(data, out, *extra, width=2):
    return [
        sys.executable,
        "-m",
        "mgjax",
        "fit",
        "--data",
        str(data),
        "--out",
        str(out),
        "--width",
        str(width),
        "--no-progress",
        *extra,
    ]


def _same(parameters: pd.DataFrame, reference, rtol=1e-9):
    got = parameters.sort_values(["subject", "parameter"]).reset_index(drop=True)
    ref = reference.parameters.sort_values(["subject", "parameter"]).reset_index(drop=True)
    assert list(got["subject"]) == list(ref["subject"])
    np.testing.assert_allclose(got["estimate"], ref["estimate"], rtol=rtol)
    np.testing.assert_allclose(got["se"], ref["se"], rtol=1e-6)


def test_sigkill_then_resume_equals_uninterrupted(data, reference, cache, tmp_path):
    """Killed with SIGKILL after its first part, resumed; equals the uninterrupted run (both on
    the reference's 4 devices, so both reuse its compiled program from the cache)."""
    out = tmp_path / "run"
    process = subprocess.Popen(
        _fit_command(data, out, width=4),
        env=_env(cache, devices=4),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if list((out / "parts").glob("part-*.parquet")):
            break
        time.sleep(0.2)
    assert process.poll() is None, "the job ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = set(batch.read_parts(out)["subject"])
    assert 0 < len(finished) < len(SUBJECTS)
    assert not (out / "subjects.csv").exists()
    resume = subprocess.run(
        _fit_command(data, out, "--resume", width=4),
        env=_env(cache, devices=4),
        capture_output=True,
        text=True,
    )
    assert resume.returncode == 0, resume.stdout[-2000:] + resume.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["subjects_resumed"] == len(finished)
    assert summary["subjects_fitted_now"] == len(SUBJECTS) - len(finished)
    _same(pd.read_csv(out / "parameters.csv"), reference)
    subjects = pd.read_csv(out / "subjects.csv")
    np.testing.assert_allclose(subjects["loss"], reference.subjects["loss"], rtol=1e-10)


def test_four_host_devices_equal_one_device(data, reference, tmp_path):
    """The same batch on this process's one device gives the 4-device table."""
    import mgjax
    from mgjax.synth._cohort import COHORT_PARAMETERS, cohort_error_models

    ds = mgjax.load_dataset(data)
    errors = cohort_error_models(sorted(ds.observations["observable"].unique()))
    batch.fit_batch(
        ds,
        COHORT_PARAMETERS,
        tmp_path / "one",
        settings=batch.BatchSettings(width=4),
        error_models=errors,
    )
    assert len(reference.subjects) == len(SUBJECTS)
    assert (reference.subjects["status"] == "converged").all()
    _same(pd.read_csv(tmp_path / "one" / "parameters.csv"), reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_distributed_processes_split_and_merge(data, reference, cache, tmp_path):
    out = tmp_path / "run"
    port = _free_port()
    processes = [
        subprocess.Popen(
            _fit_command(
                data,
                out,
                "--distributed",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ),
            env=_env(cache),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = [p.communicate(timeout=900)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), "\n".join(log[-2000:] for log in logs)
    parts = batch.read_parts(out)
    assert sorted(parts["subject"]) == SUBJECTS  # each subject fitted once, by one process
    assert {p.name.split("-")[1] for p in (out / "parts").glob("part-*")} == {"s0of2", "s1of2"}
    assert "merged 2 processes" in logs[0]
    _same(pd.read_csv(out / "parameters.csv"), reference)
