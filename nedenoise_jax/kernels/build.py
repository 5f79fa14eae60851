"""Builds and loads the oneDNN CPU kernels (``csrc/onednn_conv.cc``) as XLA FFI targets.

XLA:CPU runs convolutions through Eigen, with transposes around the kernel
gradient; oneDNN (the library PyTorch uses on the CPU) ran the same layers
1.2x to 1.8x faster on a 2-core AVX-512 CPU (``docs/performance.md``). This
module compiles ``csrc/onednn_conv.cc`` once per machine (about 3 s, with the
system's C++ compiler, the oneDNN headers and library of the
``onednn-devel-cpu-gomp`` / ``onednn-cpu-gomp`` wheels and JAX's FFI headers),
caches the shared library, and registers its FFI targets (wrapped by
:mod:`nedenoise_jax.kernels.onednn`). The cache key covers the source, the
compiler and its version, the compile flags, the oneDNN and JAX versions.

Nothing is built or loaded in a process whose default JAX backend is not the
CPU (a GPU or TPU host): :func:`enabled` is then False and the layers run
XLA's operations. ``NEDENOISE_CPU_CONV`` selects the path on the CPU:

* ``auto`` (default): oneDNN when it can be built, else XLA (with a warning);
* ``onednn``: oneDNN, and an error if it cannot be built;
* ``xla``: XLA's own convolutions.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from importlib import metadata
from typing import Optional

import jax

from nedenoise_jax import files

ENV = "NEDENOISE_CPU_CONV"
CACHE_ENV = "NEDENOISE_CACHE_DIR"
MODES = ("auto", "onednn", "xla")
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "onednn_conv.cc")
# The wheels that provide the oneDNN headers and library (their versions enter the cache key).
HEADERS_DIST, LIBRARY_DIST = "onednn-devel-cpu-gomp", "onednn-cpu-gomp"
# Or a oneDNN of your own: a folder with include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so.3
# (and the libraries it needs), e.g. a source build or Intel's maintained `onednn` wheels.
ROOT_ENV = "NEDENOISE_ONEDNN_ROOT"
_TARGETS = {"conv_fwd": "NedenoiseConvFwd", "conv_bwd_data": "NedenoiseConvBwdData",
            "conv_bwd_weights": "NedenoiseConvBwdWeights", "rconv_fwd": "NedenoiseRConvFwd",
            "rconv_bwd_data": "NedenoiseRConvBwdData", "rconv_bwd_weights": "NedenoiseRConvBwdWeights",
            "srconv_fwd": "NedenoiseSRConvFwd", "srconv_bwd_data": "NedenoiseSRConvBwdData",
            "srconv_bwd_weights": "NedenoiseSRConvBwdWeights",
            "mconv_fwd": "NedenoiseMConvFwd", "mconv_bwd_data": "NedenoiseMConvBwdData",
            "mconv_bwd_weights": "NedenoiseMConvBwdWeights", "affine_kernel": "NedenoiseAffineKernel",
            "sortpool_fwd": "NedenoiseSortPoolFwd", "sortpool_permute": "NedenoiseSortPoolPermute",
            "scale_grad": "NedenoiseScaleGrad", "combination_grad": "NedenoiseCombinationGrad"}
_lock = threading.Lock()
_state: dict = {"tried": False, "error": None, "path": None}
log = logging.getLogger(__name__)


def mode() -> str:
  """The path ``NEDENOISE_CPU_CONV`` asks for (``auto``, ``onednn`` or ``xla``)."""
  value = os.environ.get(ENV, "auto").strip().lower() or "auto"
  if value not in MODES:
    raise ValueError(f"{ENV}={value!r}; expected one of {MODES}")
  return value


def _dist_file(dist: str, suffix: str) -> Optional[str]:
  try:
    files = metadata.distribution(dist).files or []
  except metadata.PackageNotFoundError:
    return None
  for f in files:
    if ("/" + str(f).replace("\\", "/")).endswith("/" + suffix):
      path = os.path.normpath(str(f.locate()))
      if os.path.exists(path):
        return path
  return None


def _toolchain() -> dict:
  """Compiler, oneDNN header and library, JAX FFI headers; raises RuntimeError naming what is missing."""
  cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
  if not cxx:
    raise RuntimeError("no C++ compiler (set CXX, or install g++)")
  root = os.environ.get(ROOT_ENV)
  if root:
    include, lib = os.path.join(root, "include"), os.path.join(root, "lib")
    for need in (os.path.join(include, "oneapi", "dnnl", "dnnl.hpp"), os.path.join(lib, "libdnnl.so.3")):
      if not os.path.isfile(need):
        raise RuntimeError(f"{ROOT_ENV}={root}: {need} is missing")
    return {"cxx": cxx, "include": include, "lib": lib, "ffi_include": jax.ffi.include_dir()}
  header = _dist_file(HEADERS_DIST, "oneapi/dnnl/dnnl.hpp")
  if header is None:
    raise RuntimeError(f"the oneDNN headers are missing: pip install {HEADERS_DIST}")
  library = _dist_file(LIBRARY_DIST, "libdnnl.so.3")
  if library is None:
    raise RuntimeError(f"the oneDNN library is missing: pip install {LIBRARY_DIST}")
  return {"cxx": cxx, "include": os.path.dirname(os.path.dirname(os.path.dirname(header))),
          "lib": os.path.dirname(library), "ffi_include": jax.ffi.include_dir()}


def _compile_command(tc: dict, out: str) -> list[str]:
  return [tc["cxx"], "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w",
          "-I", tc["include"], "-I", tc["ffi_include"], _SOURCE, "-o", out,
          "-L", tc["lib"], "-l:libdnnl.so.3", f"-Wl,-rpath,{tc['lib']}",
          # DT_RPATH, which the loader also applies to libdnnl's own dependencies
          # (a oneDNN built against TBB or SYCL finds them beside it).
          "-Wl,--disable-new-dtags"]


def _versions(cxx: str, include: str) -> dict:
  """What the built library depends on beyond the source and the flags."""
  try:
    proc = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    compiler = proc.stdout.splitlines()[0] if proc.stdout else proc.stderr[:200]
  except (OSError, subprocess.SubprocessError) as e:
    compiler = f"unknown ({e})"
  found = {"compiler": compiler, "jax": jax.__version__, "jaxlib": metadata.version("jaxlib")}
  header = os.path.join(include, "oneapi", "dnnl", "dnnl_version.h")
  if os.path.isfile(header):  # the version of the headers compiled against, wherever they came from
    with open(header) as f:
      found["dnnl_version.h"] = f.read()
  for dist in (HEADERS_DIST, LIBRARY_DIST):
    try:
      found[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
      found[dist] = None
  return found


def cache_key(tc: dict) -> str:
  """The build's cache key: source, toolchain paths, compile command, compiler, oneDNN and JAX versions."""
  with open(_SOURCE, "rb") as f:
    source = f.read()
  parts = (source, repr(sorted(tc.items())), repr(_compile_command(tc, "OUT")),
           repr(sorted(_versions(tc["cxx"], tc["include"]).items())))
  digest = hashlib.sha256()
  for p in parts:
    digest.update(p if isinstance(p, bytes) else p.encode())
    digest.update(b"\0")
  return digest.hexdigest()[:16]


def _cache_dir() -> str:
  root = os.environ.get(CACHE_ENV) or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
      "nedenoise_jax")
  return root


def _build() -> str:
  """Compiles the handlers (once per source, toolchain and JAX version); returns the library path."""
  tc = _toolchain()
  out_dir = _cache_dir()
  path = os.path.join(out_dir, f"onednn_conv-{cache_key(tc)}.so")
  if os.path.exists(path):
    return path
  os.makedirs(out_dir, exist_ok=True)
  # Written under a temporary name and renamed (files.atomic_path): concurrent
  # builds (several processes of one job) never load a half-written library.
  with files.atomic_path(path) as tmp:
    cmd = _compile_command(tc, tmp)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode:
      raise RuntimeError(f"compiling {_SOURCE} failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
  return path


def _load() -> None:
  path = _build()
  lib = ctypes.CDLL(path)
  for kind, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(f"nedenoise_{kind}", jax.ffi.pycapsule(getattr(lib, symbol)),
                                platform="cpu")
  _state["path"] = path


def available() -> bool:
  """Whether the oneDNN handlers are built and registered (builds them on the first call)."""
  with _lock:
    if not _state["tried"]:
      _state["tried"] = True
      if sys.platform != "linux":
        _state["error"] = f"oneDNN convolutions are built on Linux only, not {sys.platform}"
      else:
        try:
          _load()
        except Exception as e:  # any failure leaves XLA's convolutions in place
          _state["error"] = f"{type(e).__name__}: {e}"
    return _state["error"] is None


def will_use() -> bool:
  """Whether float32 CPU convolutions are expected to go to oneDNN, without building anything.

  For choices made before JAX starts (:func:`train.configure_cpu_devices`):
  ``NEDENOISE_CPU_CONV`` is not ``xla``, the platform is Linux and the
  compiler and oneDNN wheels are present.
  """
  if mode() == "xla" or sys.platform != "linux":
    return False
  if _state["tried"]:
    return _state["error"] is None
  try:
    _toolchain()
  except RuntimeError:
    return False
  return True


def unavailable_reason() -> Optional[str]:
  """Why :func:`available` is False (``None`` when it is True)."""
  available()
  return _state["error"]


@functools.lru_cache(maxsize=None)
def _warn_fallback(reason: str) -> None:
  log.warning("oneDNN CPU convolutions unavailable, using XLA's (slower): %s", reason)


def enabled() -> bool:
  """Whether the layers run float32 CPU operations through oneDNN (:mod:`nedenoise_jax.kernels`).

  False without building anything when ``NEDENOISE_CPU_CONV=xla`` or when the
  process's default backend is not the CPU.
  """
  m = mode()
  if m == "xla" or jax.default_backend() != "cpu":
    return False
  if available():
    return True
  if m == "onednn":
    raise RuntimeError(f"{ENV}=onednn but the oneDNN convolutions cannot be built: {_state['error']}")
  _warn_fallback(_state["error"])
  return False
