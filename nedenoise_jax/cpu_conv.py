"""Float32 convolutions on the CPU through oneDNN, called from XLA as FFI custom calls.

XLA:CPU runs convolutions through Eigen, with transposes around the kernel
gradient; oneDNN (the library PyTorch uses on the CPU) ran the same layers
1.2x to 1.8x faster on a 2-core AVX-512 CPU (``benchmarks/conv_layers.py``). This
module compiles ``csrc/onednn_conv.cc`` once per machine (about 3 s, with the
system's C++ compiler, the oneDNN headers and library of the
``onednn-devel-cpu-gomp`` / ``onednn-cpu-gomp`` wheels and JAX's FFI headers),
caches the shared library, and registers its FFI targets: forward, input
gradient and kernel gradient, with zero or reflect padding, the latter also
with SortPool fused into the padding and with the affine kernel formed from
its parameters inside the call; SortPool itself.

:func:`ops.conv2d` uses them for float32 convolutions when the program runs
on the CPU (``jax.lax.platform_dependent``: a GPU or TPU program is
unchanged). ``NEDENOISE_CPU_CONV`` selects the path:

* ``auto`` (default): oneDNN when it can be built, else XLA (with a warning);
* ``onednn``: oneDNN, and an error if it cannot be built;
* ``xla``: XLA's own convolutions.

The values are those of ``jax.lax.conv_general_dilated`` up to float32
rounding (the sums run in another order); the gradients, to any order, are
oneDNN convolutions too.
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
import tempfile
import threading
from importlib import metadata
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

ENV = "NEDENOISE_CPU_CONV"
CACHE_ENV = "NEDENOISE_CACHE_DIR"
MODES = ("auto", "onednn", "xla")
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "onednn_conv.cc")
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
  header = _dist_file("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp")
  if header is None:
    raise RuntimeError("the oneDNN headers are missing: pip install onednn-devel-cpu-gomp")
  library = _dist_file("onednn-cpu-gomp", "libdnnl.so.3")
  if library is None:
    raise RuntimeError("the oneDNN library is missing: pip install onednn-cpu-gomp")
  return {"cxx": cxx, "include": os.path.dirname(os.path.dirname(os.path.dirname(header))),
          "lib": os.path.dirname(library), "ffi_include": jax.ffi.include_dir()}


def _cache_dir() -> str:
  root = os.environ.get(CACHE_ENV) or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
      "nedenoise_jax")
  return root


def _build() -> str:
  """Compiles the handlers (once per source, toolchain and JAX version); returns the library path."""
  tc = _toolchain()
  with open(_SOURCE, "rb") as f:
    source = f.read()
  key = hashlib.sha256(source + repr(sorted(tc.items())).encode() + jax.__version__.encode())
  out_dir = _cache_dir()
  path = os.path.join(out_dir, f"onednn_conv-{key.hexdigest()[:16]}.so")
  if os.path.exists(path):
    return path
  os.makedirs(out_dir, exist_ok=True)
  # Written under a temporary name and renamed: concurrent builds (several
  # processes of one job) never load a half-written library.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
  os.close(fd)
  cmd = [tc["cxx"], "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w",
         "-I", tc["include"], "-I", tc["ffi_include"], _SOURCE, "-o", tmp,
         "-L", tc["lib"], "-l:libdnnl.so.3", f"-Wl,-rpath,{tc['lib']}"]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode:
      raise RuntimeError(f"compiling {_SOURCE} failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
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
  """Whether :func:`ops.conv2d` runs float32 CPU convolutions through oneDNN."""
  m = mode()
  if m == "xla":
    return False
  if available():
    return True
  if m == "onednn":
    raise RuntimeError(f"{ENV}=onednn but the oneDNN convolutions cannot be built: {_state['error']}")
  if jax.default_backend() == "cpu":  # on a GPU or TPU host the fallback changes nothing
    _warn_fallback(_state["error"])
  return False


def supports(x_shape, kernel_shape, dtype, strides: int, padding) -> bool:
  """Whether oneDNN takes this convolution: float32, 4-D, windows that tile the padded input exactly."""
  if jnp.dtype(dtype) != jnp.float32 or len(x_shape) != 4 or len(kernel_shape) != 4:
    return False
  if min(x_shape) < 1 or min(kernel_shape) < 1 or strides < 1 or x_shape[3] != kernel_shape[2]:
    return False
  for size, k, (lo, hi) in zip(x_shape[1:3], kernel_shape[:2], padding):
    span = size + lo + hi - k
    if lo < 0 or hi < 0 or span < 0 or span % strides:
      return False
  return True


def threads_per_call() -> int:
  """OpenMP threads for one convolution: the process's cores shared by its CPU devices."""
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:
    cores = os.cpu_count() or 1
  return max(1, cores // max(1, len(jax.local_devices(backend="cpu"))))


def _attrs(strides, padding, threads) -> dict:
  (t, b), (l, r) = padding
  return dict(stride=np.int64(strides), pad_top=np.int64(t), pad_bottom=np.int64(b),
              pad_left=np.int64(l), pad_right=np.int64(r), threads=np.int64(threads))


def _out_shape(x_shape, kernel_shape, strides, padding):
  n, h, w, _ = x_shape
  (t, b), (l, r) = padding
  kh, kw, _, o = kernel_shape
  return (n, (h + t + b - kh) // strides + 1, (w + l + r - kw) // strides + 1, o)


def _call(kind, out_shape, a, b, strides, padding, threads, reflect):
  target = f"nedenoise_{'rconv' if reflect else 'conv'}_{kind}"
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(out_shape, a.dtype), vmap_method="sequential")(
      a, b, **_attrs(strides, padding, threads))


# Each of the three maps is linear in each argument, and their derivatives
# are the other two: every order of differentiation stays on oneDNN. With
# ``reflect`` the input is reflect-padded first (P): the maps are
# ``conv(P x, k)``, ``P^T conv_bwd_data(g, k)`` and ``conv_bwd_weights(P x, g)``,
# and the same relations hold.

@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _forward(x, kernel, strides, padding, threads, reflect):
  return _call("fwd", _out_shape(x.shape, kernel.shape, strides, padding), x, kernel, strides,
               padding, threads, reflect)


def _forward_fwd(x, kernel, strides, padding, threads, reflect):
  return _forward(x, kernel, strides, padding, threads, reflect), (x, kernel)


def _forward_bwd(strides, padding, threads, reflect, res, g):
  x, kernel = res
  return (_input_grad(g, kernel, x.shape, strides, padding, threads, reflect),
          _kernel_grad(x, g, kernel.shape, strides, padding, threads, reflect))


_forward.defvjp(_forward_fwd, _forward_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _input_grad(g, kernel, x_shape, strides, padding, threads, reflect):
  return _call("bwd_data", x_shape, g, kernel, strides, padding, threads, reflect)


def _input_grad_fwd(g, kernel, x_shape, strides, padding, threads, reflect):
  return _input_grad(g, kernel, x_shape, strides, padding, threads, reflect), (g, kernel)


def _input_grad_bwd(x_shape, strides, padding, threads, reflect, res, ct):
  g, kernel = res
  return (_forward(ct, kernel, strides, padding, threads, reflect),
          _kernel_grad(ct, g, kernel.shape, strides, padding, threads, reflect))


_input_grad.defvjp(_input_grad_fwd, _input_grad_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _kernel_grad(x, g, kernel_shape, strides, padding, threads, reflect):
  return _call("bwd_weights", kernel_shape, x, g, strides, padding, threads, reflect)


def _kernel_grad_fwd(x, g, kernel_shape, strides, padding, threads, reflect):
  return _kernel_grad(x, g, kernel_shape, strides, padding, threads, reflect), (x, g)


def _kernel_grad_bwd(kernel_shape, strides, padding, threads, reflect, res, ct):
  x, g = res
  return (_input_grad(g, ct, x.shape, strides, padding, threads, reflect),
          _forward(x, ct, strides, padding, threads, reflect))


_kernel_grad.defvjp(_kernel_grad_fwd, _kernel_grad_bwd)


def conv(x: jax.Array, kernel: jax.Array, strides: int, padding, *, reflect: bool = False) -> jax.Array:
  """NHWC x HWIO float32 convolution by oneDNN, ``padding`` ``((t, b), (l, r))``.

  The padding is zeros, or with ``reflect`` a reflect padding
  (:func:`ops.reflect_pad`, any width) done inside the call. Runs on the CPU
  only: callers pick it with ``jax.lax.platform_dependent``
  (:func:`ops.conv2d`). Check :func:`supports` first.
  """
  padding = tuple((int(a), int(b)) for a, b in padding)
  if not supports(x.shape, kernel.shape, x.dtype, strides, padding) or kernel.dtype != x.dtype:
    raise ValueError(f"oneDNN conv does not take x {x.shape} {x.dtype}, kernel {kernel.shape} "
                     f"{kernel.dtype}, strides {strides}, padding {padding}")
  return _forward(x, kernel, int(strides), padding, threads_per_call(), bool(reflect))


def _sort_call(kind, threads, pairs, *args):
  out = jax.ShapeDtypeStruct(args[-1].shape, args[-1].dtype)
  return jax.ffi.ffi_call(f"nedenoise_sortpool_{kind}", out, vmap_method="sequential")(
      *args, threads=np.int64(threads), pairs=np.int64(pairs))


# The sort applies to x a permutation that depends on x (piecewise constant):
# its gradient is that permutation's transpose, which for swaps of pairs is
# the permutation itself, linear in what it moves and with no gradient for x.
# pairs: True for adjacent pairs (2k, 2k+1), False for the "halves" order.

@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _sort_pool(x, threads, pairs):
  return _sort_call("fwd", threads, pairs, x)


def _sort_pool_fwd(x, threads, pairs):
  return _sort_pool(x, threads, pairs), x


def _sort_pool_bwd(threads, pairs, x, g):
  return (_permute(x, g, threads, pairs),)


_sort_pool.defvjp(_sort_pool_fwd, _sort_pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _permute(x, v, threads, pairs):
  return _sort_call("permute", threads, pairs, x, v)


def _permute_fwd(x, v, threads, pairs):
  return _permute(x, v, threads, pairs), x


def _permute_bwd(threads, pairs, x, ct):
  return jnp.zeros_like(x), _permute(x, ct, threads, pairs)


_permute.defvjp(_permute_fwd, _permute_bwd)


def _check_layout(layout: str) -> bool:
  if layout not in ("pairs", "halves"):
    raise ValueError(f"unknown sort_pool layout {layout!r}; expected 'pairs' or 'halves'")
  return layout == "pairs"


def sort_pool(x: jax.Array, layout: str = "pairs") -> jax.Array:
  """:func:`ops.sort_pool` (``layout`` ``"pairs"`` or ``"halves"``), float32, on the CPU (one pass on every core)."""
  pairs = _check_layout(layout)
  if x.dtype != jnp.float32 or x.ndim < 1 or x.shape[-1] % 2:
    raise ValueError(f"cpu_conv.sort_pool takes float32 arrays with an even last axis, got {x.shape} {x.dtype}")
  return _sort_pool(x, threads_per_call(), pairs)


# SortPool then a reflect-padded convolution, with the sort done while the
# input is padded: no sorted copy is written out or kept. The backward pass
# sorts z again while padding it for the kernel gradient, and permutes the
# input gradient while folding the padding back (one pass each). Those two
# fused maps differentiate as the compositions of the maps above they equal,
# so every order of differentiation works.

def _sorted_call(kind, out_shape, a, b, z, strides, padding, threads, pairs):
  args = (a, b) if z is None else (a, b, z)
  return jax.ffi.ffi_call(f"nedenoise_srconv_{kind}", jax.ShapeDtypeStruct(out_shape, a.dtype),
                          vmap_method="sequential")(
      *args, **_attrs(strides, padding, threads), pairs=np.int64(pairs))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _sorted_forward(z, kernel, strides, padding, threads, pairs):
  return _sorted_call("fwd", _out_shape(z.shape, kernel.shape, strides, padding), z, kernel, None,
                      strides, padding, threads, pairs)


def _sorted_forward_fwd(z, kernel, strides, padding, threads, pairs):
  return _sorted_forward(z, kernel, strides, padding, threads, pairs), (z, kernel)


def _sorted_forward_bwd(strides, padding, threads, pairs, res, g):
  z, kernel = res
  return (_sorted_input_grad(g, kernel, z, strides, padding, threads, pairs),
          _sorted_kernel_grad(z, g, kernel.shape, strides, padding, threads, pairs))


_sorted_forward.defvjp(_sorted_forward_fwd, _sorted_forward_bwd)


def _plain_input_grad(g, kernel, z, strides, padding, threads, pairs):
  return _permute(z, _input_grad(g, kernel, z.shape, strides, padding, threads, True), threads, pairs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _sorted_input_grad(g, kernel, z, strides, padding, threads, pairs):
  """``_plain_input_grad`` in one call."""
  return _sorted_call("bwd_data", z.shape, g, kernel, z, strides, padding, threads, pairs)


def _sorted_input_grad_fwd(g, kernel, z, strides, padding, threads, pairs):
  return _sorted_input_grad(g, kernel, z, strides, padding, threads, pairs), (g, kernel, z)


def _sorted_input_grad_bwd(strides, padding, threads, pairs, res, ct):
  return jax.vjp(lambda *a: _plain_input_grad(*a, strides, padding, threads, pairs), *res)[1](ct)


_sorted_input_grad.defvjp(_sorted_input_grad_fwd, _sorted_input_grad_bwd)


def _plain_kernel_grad(z, g, kernel_shape, strides, padding, threads, pairs):
  return _kernel_grad(_sort_pool(z, threads, pairs), g, kernel_shape, strides, padding, threads, True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _sorted_kernel_grad(z, g, kernel_shape, strides, padding, threads, pairs):
  """``_plain_kernel_grad`` in one call."""
  return _sorted_call("bwd_weights", kernel_shape, z, g, None, strides, padding, threads, pairs)


def _sorted_kernel_grad_fwd(z, g, kernel_shape, strides, padding, threads, pairs):
  return _sorted_kernel_grad(z, g, kernel_shape, strides, padding, threads, pairs), (z, g)


def _sorted_kernel_grad_bwd(kernel_shape, strides, padding, threads, pairs, res, ct):
  return jax.vjp(lambda z, g: _plain_kernel_grad(z, g, kernel_shape, strides, padding, threads, pairs),
                 *res)[1](ct)


_sorted_kernel_grad.defvjp(_sorted_kernel_grad_fwd, _sorted_kernel_grad_bwd)


def sort_pool_conv(z: jax.Array, kernel: jax.Array, strides: int, padding,
                   layout: str = "pairs") -> jax.Array:
  """``conv(x, k, strides, padding, reflect=True)`` of ``x = sort_pool(z, layout)``, in one pass over ``z``."""
  pairs = _check_layout(layout)
  padding = tuple((int(a), int(b)) for a, b in padding)
  if (not supports(z.shape, kernel.shape, z.dtype, strides, padding) or kernel.dtype != z.dtype
      or z.shape[-1] % 2):
    raise ValueError(f"oneDNN sort_pool_conv does not take z {z.shape} {z.dtype}, kernel "
                     f"{kernel.shape} {kernel.dtype}, strides {strides}, padding {padding}")
  return _sorted_forward(z, kernel, int(strides), padding, threads_per_call(), pairs)


# The affine kernel map inside the call: the convolutions above (reflect
# padded, after SortPool with sort "pairs" or "halves") with the kernel
# scale * A(theta), A = ops.affine_kernel(theta, free_channels=free,
# total=total) ("centre"), kmap = (free, total). The handlers form the kernel
# from theta while reordering it (the anchors summed from the reordered
# copy in cache, which is then scaled and its anchor taps written) and
# return the kernel gradient as the gradients of theta and scale: XLA
# neither writes the kernel out nor keeps it for the backward pass. Their
# derivatives are those of the compositions they equal (_unmapped_*), so
# every order of differentiation works.

_SORT_MODES = {None: 0, "halves": 1, "pairs": 2}


def _kmap_attrs(kernel_shape, kmap) -> dict:
  """The handlers' attributes for the kernel map ``kmap = (free, total)`` of a kernel of that shape."""
  from nedenoise_jax import ops  # ops imports this module

  free, total = kmap
  ah, aw = ops.anchor_tap(kernel_shape[:2])
  return dict(anchor_h=np.int64(ah), anchor_w=np.int64(aw), n_con=np.int64(kernel_shape[2] - free),
              total=np.float32(total))


def _map_attrs(strides, padding, threads, sort, kernel_shape, kmap) -> dict:
  return dict(_attrs(strides, padding, threads), sort=np.int64(_SORT_MODES[sort]),
              **_kmap_attrs(kernel_shape, kmap))


def _map_call(kind, out, args, strides, padding, threads, sort, kmap, kernel_shape):
  return jax.ffi.ffi_call(f"nedenoise_mconv_{kind}", out, vmap_method="sequential")(
      *args, **_map_attrs(strides, padding, threads, sort, kernel_shape, kmap))


def _mapped_kernel(theta, scale, kmap):
  """``scale * A(theta)`` by XLA: the kernel the handlers form."""
  from nedenoise_jax import ops

  free, total = kmap
  return ops.affine_kernel(theta, free_channels=free, total=total) * scale


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def _mapped_forward(x, theta, scale, strides, padding, threads, sort, kmap):
  out = jax.ShapeDtypeStruct(_out_shape(x.shape, theta.shape, strides, padding), x.dtype)
  return _map_call("fwd", out, (x, theta, scale), strides, padding, threads, sort, kmap, theta.shape)


def _mapped_forward_fwd(x, theta, scale, *static):
  return _mapped_forward(x, theta, scale, *static), (x, theta, scale)


def _mapped_forward_bwd(strides, padding, threads, sort, kmap, res, g):
  x, theta, scale = res
  static = (strides, padding, threads, sort, kmap)
  dtheta, dscale = _mapped_kernel_grad(x, g, theta, scale, *static)
  return _mapped_input_grad(g, theta, scale, x, *static), dtheta, dscale


_mapped_forward.defvjp(_mapped_forward_fwd, _mapped_forward_bwd)


def _unmapped_input_grad(g, theta, scale, z, strides, padding, threads, sort, kmap):
  k = _mapped_kernel(theta, scale, kmap)
  if sort is None:
    return _input_grad(g, k, z.shape, strides, padding, threads, True)
  return _sorted_input_grad(g, k, z, strides, padding, threads, sort == "pairs")


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _mapped_input_grad(g, theta, scale, z, strides, padding, threads, sort, kmap):
  """``_unmapped_input_grad`` in one call (``z``: the convolution's input, before the sort)."""
  return _map_call("bwd_data", jax.ShapeDtypeStruct(z.shape, g.dtype), (g, theta, scale, z), strides,
                   padding, threads, sort, kmap, theta.shape)


def _mapped_input_grad_fwd(g, theta, scale, z, *static):
  return _mapped_input_grad(g, theta, scale, z, *static), (g, theta, scale, z)


def _mapped_input_grad_bwd(strides, padding, threads, sort, kmap, res, ct):
  return jax.vjp(lambda *a: _unmapped_input_grad(*a, strides, padding, threads, sort, kmap), *res)[1](ct)


_mapped_input_grad.defvjp(_mapped_input_grad_fwd, _mapped_input_grad_bwd)


def _unmapped_kernel_grad(x, g, theta, scale, strides, padding, threads, sort, kmap):
  k, back = jax.vjp(lambda t, s: _mapped_kernel(t, s, kmap), theta, scale)
  if sort is None:
    gk = _kernel_grad(x, g, k.shape, strides, padding, threads, True)
  else:
    gk = _sorted_kernel_grad(x, g, k.shape, strides, padding, threads, sort == "pairs")
  return back(gk)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _mapped_kernel_grad(x, g, theta, scale, strides, padding, threads, sort, kmap):
  """``_unmapped_kernel_grad`` in one call: the gradients of ``theta`` and ``scale``."""
  out = (jax.ShapeDtypeStruct(theta.shape, theta.dtype), jax.ShapeDtypeStruct((), theta.dtype))
  return tuple(_map_call("bwd_weights", out, (x, g, theta, scale), strides, padding, threads, sort, kmap,
                         theta.shape))


def _mapped_kernel_grad_fwd(x, g, theta, scale, *static):
  return _mapped_kernel_grad(x, g, theta, scale, *static), (x, g, theta, scale)


def _mapped_kernel_grad_bwd(strides, padding, threads, sort, kmap, res, ct):
  return jax.vjp(lambda *a: _unmapped_kernel_grad(*a, strides, padding, threads, sort, kmap), *res)[1](ct)


_mapped_kernel_grad.defvjp(_mapped_kernel_grad_fwd, _mapped_kernel_grad_bwd)


def affine_conv(x: jax.Array, theta: jax.Array, scale: jax.Array, strides: int, padding, *,
                free_channels: int = 0, total: float = 1.0, sort: Optional[str] = None) -> jax.Array:
  """``conv(x, k, strides, padding, reflect=True)`` with ``k = scale * ops.affine_kernel(theta, ...)``.

  ``k`` is ``ops.affine_kernel(theta, free_channels=free_channels,
  total=total)`` (the ``centre`` parametrization) times the scalar ``scale``,
  formed inside the call; with ``sort`` (``"pairs"`` or ``"halves"``) the
  input is ``sort_pool(x, sort)``, as in :func:`sort_pool_conv`. Float32.
  """
  padding = tuple((int(a), int(b)) for a, b in padding)
  if sort is not None:
    _check_layout(sort)
  if (not supports(x.shape, theta.shape, x.dtype, strides, padding) or theta.dtype != x.dtype
      or jnp.shape(scale) or jnp.result_type(scale) != x.dtype or (sort and x.shape[-1] % 2)
      or not 0 <= free_channels < theta.shape[2]):
    raise ValueError(f"oneDNN affine_conv does not take x {x.shape} {x.dtype}, theta {theta.shape} "
                     f"{theta.dtype}, scale {jnp.shape(scale)} {jnp.result_type(scale)}, strides "
                     f"{strides}, padding {padding}, free_channels {free_channels}, sort {sort}")
  return _mapped_forward(x, theta, scale, int(strides), padding, threads_per_call(), sort,
                         (int(free_channels), float(total)))


def affine_kernel(theta: jax.Array, *, free_channels: int = 0, total: float = 1.0) -> jax.Array:
  """``ops.affine_kernel(theta, ...)`` ("centre") exactly as :func:`affine_conv` forms it (float32, CPU).

  For the kernel of a convolution that forms it itself, computed apart (to
  be recorded, or once for inference): the same values, bit for bit. It
  differentiates as ``ops.affine_kernel``.
  """
  if theta.dtype != jnp.float32 or theta.ndim != 4 or not 0 <= free_channels < theta.shape[2]:
    raise ValueError(f"cpu_conv.affine_kernel takes a float32 HWIO theta and 0 <= free_channels < c_in, "
                     f"got {theta.shape} {theta.dtype}, free_channels {free_channels}")
  return _affine_kernel(theta, int(free_channels), float(total))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _affine_kernel(theta, free_channels, total):
  return jax.ffi.ffi_call("nedenoise_affine_kernel", jax.ShapeDtypeStruct(theta.shape, theta.dtype),
                          vmap_method="sequential")(
      theta, threads=np.int64(threads_per_call()), **_kmap_attrs(theta.shape, (free_channels, total)))


def _affine_kernel_fwd(theta, free_channels, total):
  return _affine_kernel(theta, free_channels, total), theta


def _affine_kernel_bwd(free_channels, total, theta, ct):
  return jax.vjp(lambda t: _mapped_kernel(t, 1.0, (free_channels, total)), theta)[1](ct)


_affine_kernel.defvjp(_affine_kernel_fwd, _affine_kernel_bwd)


@jax.custom_vjp
def scale_grad(g: jax.Array, x: jax.Array, alpha: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(alpha*g, sum(g*x))``, the gradient of ``alpha*x + y`` for ``x`` and ``alpha``, in one pass.

  Float32 ``g`` and ``x`` of one shape and a scalar ``alpha``. It holds its
  cores as the convolutions do (see the library's header), rather than
  running beside one.
  """
  if g.dtype != jnp.float32 or x.dtype != jnp.float32 or g.shape != x.shape or jnp.shape(alpha):
    raise ValueError(f"scale_grad takes float32 g and x of one shape and a scalar alpha, got "
                     f"{g.shape} {g.dtype}, {x.shape} {x.dtype} and {jnp.shape(alpha)}")
  out = (jax.ShapeDtypeStruct(g.shape, g.dtype), jax.ShapeDtypeStruct((), g.dtype))
  return jax.ffi.ffi_call("nedenoise_scale_grad", out, vmap_method="sequential")(
      g, x, jnp.asarray(alpha, g.dtype), threads=np.int64(threads_per_call()))


def _scale_grad_fwd(g, x, alpha):
  return scale_grad(g, x, alpha), (g, x, alpha)


def _scale_grad_bwd(res, ct):
  from nedenoise_jax import ops  # ops imports this module

  # Differentiated as the XLA formula it equals (ops' path off the CPU).
  return jax.vjp(ops._xla_scale_grad, *res)[1](ct)


scale_grad.defvjp(_scale_grad_fwd, _scale_grad_bwd)


@jax.custom_vjp
def combination_grad(g: jax.Array, x: jax.Array, y: jax.Array,
                     alpha: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(alpha*g, g - alpha*g, sum(g*(x - y)))``: the gradient of ``y + alpha*(x - y)``, in one pass.

  For ``ops.affine_combination``: float32 ``g``, ``x``, ``y`` of one shape
  and a scalar ``alpha``, on the cores as :func:`scale_grad`.
  """
  if any(a.dtype != jnp.float32 or a.shape != g.shape for a in (g, x, y)) or jnp.shape(alpha):
    raise ValueError(f"combination_grad takes float32 g, x and y of one shape and a scalar alpha, got "
                     f"{g.shape} {g.dtype}, {x.shape} {x.dtype}, {y.shape} {y.dtype} and {jnp.shape(alpha)}")
  out = (jax.ShapeDtypeStruct(g.shape, g.dtype),) * 2 + (jax.ShapeDtypeStruct((), g.dtype),)
  return jax.ffi.ffi_call("nedenoise_combination_grad", out, vmap_method="sequential")(
      g, x, y, jnp.asarray(alpha, g.dtype), threads=np.int64(threads_per_call()))


def _combination_grad_fwd(g, x, y, alpha):
  return combination_grad(g, x, y, alpha), (g, x, y, alpha)


def _combination_grad_bwd(res, ct):
  from nedenoise_jax import ops

  return jax.vjp(ops._xla_combination_grad, *res)[1](ct)


combination_grad.defvjp(_combination_grad_fwd, _combination_grad_bwd)
