"""Compiled programs that a second run of the same job neither traces nor compiles again.

JAX's persistent compilation cache skips XLA's compile, but a Diffrax solve inside an
Optimistix loop still costs seconds of Python tracing and lowering on every run. Here a program
is traced once, exported (`jax.export`, StableHLO) to a file keyed by everything that shapes
it, and later runs deserialize it and hand it to XLA, whose compiled executable comes from the
persistent compilation cache.

The key holds the program's name and static settings, the input tree (including the static
fields of Equinox modules), shapes, dtypes and shardings, the JAX version, the backend, the
device count and a hash of mgjax's own source files: change any of them and the program is
traced afresh. Inputs whose tree mentions Python objects by address (user functions) are never
stored. Programs must not contain host callbacks (trace them under `errors_as_nan`).

The exported module is reused only by the same JAX version on the same machine type, so the
custom calls to LAPACK/cuSOLVER (which carry no cross-version guarantee) are allowed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax


def source_files() -> list[Path]:
    """mgjax's Python sources: every module of the package, whichever layer it sits in."""
    return sorted(Path(__file__).parents[1].rglob("*.py"))


@functools.cache
def source_hash() -> str:
    """Hash of mgjax's Python sources (a changed model, solver or objective never reuses a
    program)."""
    digest = hashlib.sha256()
    root = Path(__file__).parents[1]
    for path in source_files():
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def program_dir() -> Path | None:
    """Folder of stored programs: next to JAX's persistent cache when that is on, else None
    (storing programs is then off too; also off with MGJAX_PROGRAM_CACHE=0 and in
    multi-process jobs)."""
    path = jax.config.jax_compilation_cache_dir
    if not path or os.environ.get("MGJAX_PROGRAM_CACHE", "1") == "0":
        return None
    if jax.process_count() > 1:  # multi-process programs: compiled by each job, not stored
        return None
    return Path(path).parent / "programs"


def _key(name: str, static: Any, args: Any) -> str | None:
    leaves, treedef = jax.tree.flatten(args)
    tree = str(treedef)
    if " at 0x" in tree:  # a Python object without a stable identity: never store
        return None
    avals = [(tuple(x.shape), str(x.dtype), str(getattr(x, "sharding", ""))) for x in leaves]
    devices = jax.devices()
    text = json.dumps(
        [
            name,
            repr(static),
            tree,
            avals,
            jax.__version__,
            devices[0].platform,
            getattr(devices[0], "device_kind", ""),
            len(devices),
            jax.process_count(),
            source_hash(),
        ],
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


#: LAPACK kernels that linear solves and eigen-decompositions lower to on CPU (exports are only
#: reused by the same JAX version, so their lack of a cross-version guarantee does not matter).
_LAPACK = [
    f"lapack_{p}{op}_ffi"
    for p in "sdcz"
    for op in (
        "geqrf geqp3 orgqr ungqr ormqr unmqr getrf potrf syevd heevd gesdd gesvd trsm gees "
        "geev gehrd sytrd hetrd gtsv sytrf"
    ).split()
]


def _export(jitted, args):
    checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in _LAPACK]
    try:
        return jax.export.export(jitted, disabled_checks=checks)(*args)
    except ValueError as e:  # custom calls without a compatibility guarantee: allow them
        if "custom calls" not in str(e):
            raise
        text = jitted.lower(*args).as_text()
        targets = sorted(set(re.findall(r"custom_call @([A-Za-z0-9_.]+)", text)))
        checks += [jax.export.DisabledSafetyCheck.custom_call(t) for t in targets]
        return jax.export.export(jitted, disabled_checks=checks)(*args)


#: XLA:CPU settings for mgjax's programs: the MLIR fusion emitters off (XLA's classic loop
#: emitters instead). On the main job's round program (2-core CPU, docs/batch.md "Compile
#: options") XLA compiles in 9.5 instead of 13.1 s and the rounds run 19 % faster (0.27 vs
#: 0.34 s); lower backend optimisation levels bought nothing more at level 1–2 and cost 2.6×
#: the run time at level 0. And XLA's while-loop invariant code motion off: on these programs
#: (a Diffrax loop inside an Optimistix loop) it took 2 of XLA's 7.5 s and bought no run time
#: (`mgjax fit` of 200 subjects: compile 10.9 → 8.7 s, run 42.8 / 42.6 s). And the reshape
#: mover off: on these programs it and the algebraic simplifier undo each other, so XLA's
#: "simplification" fixed point ran to its limit of 25 rounds (8 without it; the one after
#: scatter expansion 9 → 4): the main job's cold compile −0.5 to −1 s, the estimates identical
#: to the bit, the rounds no slower.
CPU_COMPILER_OPTIONS = {
    "xla_cpu_use_fusion_emitters": False,
    "xla_disable_hlo_passes": "while-loop-invariant-code-motion,reshape-mover",
}
#: For programs that run once and briefly (the report's curves): also backend optimisation 0
#: and no expensive LLVM passes — compiles in about half the time, runs ~2.5× slower.
FAST_CPU_COMPILE = {
    **CPU_COMPILER_OPTIONS,
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}


def cpu_compiler_options(platform: str | None = None, *, run_once: bool = False) -> dict | None:
    """XLA's options for an mgjax program on `platform` (default: the default backend's):
    `CPU_COMPILER_OPTIONS`, or `FAST_CPU_COMPILE` for a program that runs once (`run_once`);
    None (XLA's defaults) off the CPU."""
    if (platform or jax.default_backend()) != "cpu":
        return None
    return dict(FAST_CPU_COMPILE if run_once else CPU_COMPILER_OPTIONS)


_IN_MEMORY: dict[tuple[str, str], "CompiledProgram"] = {}
_JSON_IN_MEMORY: dict[str, Any] = {}


class CompiledProgram:
    """A compiled program plus how it was obtained: `source` is `stored` (read back),
    `traced` (traced now and stored), `uncached` (compiled, not stored) or `memory` (compiled
    earlier in this process); `seconds` is the time to obtain it
    (tracing, lowering, compiling or reading back)."""

    def __init__(self, call: Callable, source: str, seconds: float):
        self.call = call
        self.source = source
        self.seconds = seconds

    def __call__(self, *args):
        return self.call(*args)


def compile_program(
    name: str,
    fn: Callable[..., Any],
    args: tuple,
    *,
    static: Any = None,
    in_shardings: Any = None,
    compiler_options: dict[str, Any] | None = None,
) -> CompiledProgram:
    """`jax.jit(fn)` compiled for `args`, stored and reused across processes when JAX's
    persistent compilation cache is on (see the module docstring).

    `fn` takes and returns PyTrees of arrays made of lists, tuples and dicts only (flatten
    Equinox modules first); `static` names whatever else shapes the trace (settings baked
    into `fn`); `compiler_options` are XLA's, for this program only (`cpu_compiler_options`)."""
    t0 = time.perf_counter()
    jitted = jax.jit(fn, in_shardings=in_shardings) if in_shardings is not None else jax.jit(fn)
    options = dict(compiler_options or {})
    key = _key(name, (static, str(in_shardings), sorted(options.items())), args)
    if key is not None and (name, key) in _IN_MEMORY:  # compiled earlier in this process
        program = _IN_MEMORY[name, key]
        return CompiledProgram(program.call, "memory", time.perf_counter() - t0)
    folder = program_dir()
    if key is None or folder is None:
        compiled = jitted.lower(*args).compile(options or None)
        program = CompiledProgram(compiled, "uncached", time.perf_counter() - t0)
        if key is not None:
            _IN_MEMORY[name, key] = program
        return program
    path = folder / f"{name}-{key}.jaxexport"
    exported, source = None, "stored"
    if path.exists():
        try:
            exported = jax.export.deserialize(bytearray(path.read_bytes()))
        except Exception:  # a truncated or foreign file: trace again
            exported = None
    if exported is None:
        source = "traced"
        try:
            exported = _export(jitted, args)
            data = exported.serialize()
        except (NotImplementedError, ImportError):
            # host callbacks (a part traced earlier in this process with Equinox's raising
            # checks), or no serializer installed: compile without storing
            compiled = jitted.lower(*args).compile(options or None)
            program = CompiledProgram(compiled, "uncached", time.perf_counter() - t0)
            _IN_MEMORY[name, key] = program
            return program
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    # a program exported for several devices is called under the same shardings (JAX refuses
    # to call it in a one-device context)
    call = (
        jax.jit(exported.call, in_shardings=in_shardings)
        if in_shardings is not None
        else (jax.jit(exported.call))
    )
    compiled = call.lower(*args).compile(options or None)
    program = CompiledProgram(compiled, source, time.perf_counter() - t0)
    _IN_MEMORY[name, key] = program
    return program


def stored_json(name: str, static: Any, compute: Callable[[], Any]) -> Any:
    """A small JSON-able value (e.g. the shapes of an optimiser state) computed once per
    `static` key and mgjax source, stored next to the programs."""
    key = hashlib.sha256(
        json.dumps([name, repr(static), jax.__version__, source_hash()]).encode()
    ).hexdigest()[:32]
    if key in _JSON_IN_MEMORY:
        return _JSON_IN_MEMORY[key]
    folder = program_dir()
    if folder is None:
        value = _JSON_IN_MEMORY[key] = compute()
        return value
    path = folder / f"{name}-{key}.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    value = _JSON_IN_MEMORY[key] = compute()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)
    return value
