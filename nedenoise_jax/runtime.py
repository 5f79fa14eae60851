"""Process-level setting for the command-line tools: glibc malloc that keeps freed memory.

XLA:CPU allocates a program's temporary buffers with ``malloc`` at every
execution (about 1.1 GB for NE DRUNet's training step on 4x128x128 patches).
glibc serves blocks that large from fresh ``mmap`` regions and unmaps them
on ``free``, so every step first-touches them page by page again: about
218,000 page faults and 0.3 to 0.5 s of kernel time per DRUNet step on this
project's 2-core CPU. With

    GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736

malloc takes every block from one heap and keeps freed memory for the next
step: no page faults after the first step (``benchmarks/results/malloc.md``).
The process then holds on to its peak memory until it exits, which is what a
training or denoising job does anyway.

A tunable is read when the process starts, so :func:`configure_malloc`
re-executes the process with it set. The command-line tools (``train.py``,
``python -m nedenoise_jax.denoise``, ``evaluate``, ``analyze``,
``benchmarks/``) call it first thing; ``NEDENOISE_MALLOC=0`` keeps the process
as it is, and any ``glibc.malloc`` tunable of your own is left alone. In your
own programs set the variable before Python starts.
"""

from __future__ import annotations

import os
import platform
import sys

ENV = "NEDENOISE_MALLOC"
TUNABLES = ("glibc.malloc.arena_max=1", "glibc.malloc.mmap_max=0",
            "glibc.malloc.trim_threshold=68719476736")


def _glibc_has_tunables() -> bool:
  lib, version = platform.libc_ver()
  if lib != "glibc":
    return False
  try:
    major, minor = (int(v) for v in version.split(".")[:2])
  except ValueError:
    return False
  return (major, minor) >= (2, 26)


def active() -> bool:
  """Whether this process started with :data:`TUNABLES` set."""
  given = os.environ.get("GLIBC_TUNABLES", "").split(":")
  return all(t in given for t in TUNABLES)


def wanted() -> bool:
  """Whether :func:`configure_malloc` would re-execute this process."""
  if os.environ.get(ENV, "1").strip() == "0" or sys.platform != "linux":
    return False
  if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
    return False  # the user's own malloc tunables (or ours, after the re-execution)
  return _glibc_has_tunables()


def configure_malloc() -> None:
  """Re-executes this process with :data:`TUNABLES` added to ``GLIBC_TUNABLES``, where they apply.

  Does nothing off Linux and glibc, when ``GLIBC_TUNABLES`` already sets a
  ``glibc.malloc`` tunable, or with ``NEDENOISE_MALLOC=0``. Call it before
  any work: the process starts again from the same command line
  (``sys.orig_argv``).
  """
  if not wanted():
    return
  current = os.environ.get("GLIBC_TUNABLES", "")
  os.environ["GLIBC_TUNABLES"] = ":".join(([current] if current else []) + list(TUNABLES))
  argv = list(getattr(sys, "orig_argv", [sys.executable] + sys.argv))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, argv)
