"""Symbolic expressions → JAX functions, generated once per model with common-subexpression
elimination (sympy's `lambdify(..., modules="jax", cse=True)`).

The generated source is kept on each function (`source`) so it can be inspected or written
out; piecewise expressions become `jnp.select`, so a step input stays a step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import sympy as sp


class GeneratedFunction:
    """A generated function returning a float64 vector; hashable by identity (a static leaf
    of the problem's PyTree, so one model compiles once)."""

    def __init__(self, name: str, arguments: Sequence, expressions: Sequence[sp.Expr]):
        self.name = name
        self.size = len(expressions)
        if self.size == 0:
            self._fn = None
            self.source = f"def {name}(*args):\n    return []\n"
            return
        self._fn = sp.lambdify(
            list(arguments), list(expressions), modules="jax", cse=True, dummify=True
        )
        self.source = inspect.getsource(self._fn).replace("_lambdifygenerated", name)

    def __call__(self, *args) -> jnp.ndarray:
        if self._fn is None:
            return jnp.zeros((0,), dtype=jnp.float64)
        out = self._fn(*args)
        return jnp.stack([jnp.asarray(v, dtype=jnp.float64) for v in out])

    def __repr__(self) -> str:
        return f"GeneratedFunction({self.name}, {self.size} outputs)"


def generate(name: str, arguments: Sequence, expressions: Sequence[sp.Expr]) -> Callable:
    return GeneratedFunction(name, arguments, expressions)
