"""The XLA compiler options this project's programs are compiled with.

On the CPU, jaxlib 0.10 hands convolutions to YNNPACK by default
(``xla_cpu_experimental_ynn_fusion_type`` includes ``individual_convolution``).
On this project's 2-core AVX2 machine that path runs 3x3 convolutions at
40-90 GFLOP/s, their kernel gradients at 9-21 GFLOP/s, and an unpadded
(``VALID``) convolution 3x slower than a padded one; XLA's own (Eigen)
convolutions reach 130-175 GFLOP/s forward and 110-150 GFLOP/s for kernel
gradients (``benchmarks/bench.py``, README "Performance"). So every program
this package jits on the CPU (training steps, evaluation, ``denoise``,
``analyze``, the benchmarks) keeps YNNPACK for matrix products only.

Your own ``jax.jit`` around our modules gets the same effect with
``nedenoise_jax.xla_options.jit`` (a drop-in for ``jax.jit``), with
``jax.jit(..., compiler_options=xla_options.compiler_options())``, or for a
whole process with
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``.
If ``XLA_FLAGS`` already sets that option, or ``NEDENOISE_XLA_DEFAULTS=1``,
nothing is overridden. Other backends get no options.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

_OPTION = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS = {_OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.lru_cache(maxsize=None)
def _cpu_options_supported() -> bool:
  try:
    jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(jnp.zeros(2)).compile()
  except Exception as e:  # an older or newer jaxlib without the option
    warnings.warn(f"nedenoise_jax: this jaxlib rejects the XLA CPU option {CPU_OPTIONS}; "
                  f"compiling with XLA's defaults ({str(e).splitlines()[0][:200]})")
    return False
  return True


def compiler_options(backend: Optional[str] = None) -> dict[str, Any]:
  """Options for ``jax.jit(..., compiler_options=...)`` on ``backend`` (default: JAX's default)."""
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return {}
  if os.environ.get("NEDENOISE_XLA_DEFAULTS") == "1" or _OPTION in os.environ.get("XLA_FLAGS", ""):
    return {}
  return dict(CPU_OPTIONS) if _cpu_options_supported() else {}


def jit(fun: Optional[Callable] = None, **kwargs) -> Callable:
  """``jax.jit`` with :func:`compiler_options` added; usable as ``@jit`` or ``@jit(...)``."""
  if fun is None:
    return functools.partial(jit, **kwargs)
  options = {**compiler_options(), **(kwargs.pop("compiler_options", None) or {})}
  return jax.jit(fun, compiler_options=options or None, **kwargs)
