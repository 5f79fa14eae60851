"""Backends below the layers: one dispatch point per operation that has a fused version.

The layers (:mod:`nedenoise_jax.nn.layers`) call these functions; each has
the signature and the values of its reference in :mod:`nedenoise_jax.ops`
(up to float rounding) and chooses where it runs:

* float32 programs compiled for the CPU go to oneDNN (:mod:`.onednn`, built
  by :mod:`.build`) where the shapes suit it, through
  ``jax.lax.platform_dependent``, so one program still runs anywhere;
* with ``NEDENOISE_GPU_CONV=pallas``, reflect-padded 3x3 convolutions on CUDA
  GPUs go to a Pallas kernel that loads its input at reflected addresses and
  sorts the channel pairs as it loads them, and its kernel gradient to a
  second one (:mod:`.pallas_conv`; ``pallas_fwd``: the first only), through
  ``platform_dependent`` too (``interpret``: both in Pallas' interpreter
  on every platform, for tests);
* everything else (GPUs by default, TPUs, float64, ``NEDENOISE_CPU_CONV=xla``, a
  machine without a compiler) runs the reference XLA operations.

Nothing here changes what a layer stores or how it is configured: the choice
is made per call, from the arrays' dtypes and shapes.

=========================  ===============================================  ==============================
function                   what it computes (reference)                     CPU float32 backend
=========================  ===============================================  ==============================
:func:`conv2d`             :func:`ops.conv2d`                               oneDNN convolution, padding in the call
                                                                            (GPU, ``pallas``: reflect 3x3 in one pass)
:func:`sort_pool`          :func:`ops.sort_pool`                            one pass on every core
:func:`sort_pool_conv2d`   :func:`ops.sort_pool_conv2d`                     the sort done while padding
                                                                            (GPU, ``pallas``: sorted as loaded)
:func:`affine_conv2d`      :func:`ops.affine_conv2d`                        the affine kernel formed in the call
:func:`affine_kernel`      :func:`ops.affine_kernel` (``centre``)           as :func:`affine_conv2d` forms it
:func:`affine_combination` :func:`ops.affine_combination`                   one-pass gradient
:func:`scale_add`          :func:`ops.scale_add`                            one-pass gradient
=========================  ===============================================  ==============================
"""

from __future__ import annotations

import functools
from typing import Callable, Literal

import jax
import jax.numpy as jnp

from nedenoise_jax import ops
from nedenoise_jax.kernels import build, onednn, pallas_conv, xla_options

__all__ = ["affine_combination", "affine_conv2d", "affine_kernel", "build", "conv2d", "onednn",
           "pallas_conv", "per_cpu_path", "scale_add", "sort_pool", "sort_pool_conv2d", "uses_onednn",
           "xla_options"]


def per_cpu_path(make: Callable, maxsize: int = 16) -> Callable:
  """``make(*args)`` (a jitted function) kept per ``args`` and CPU path (``NEDENOISE_CPU_CONV``).

  The paths (``NEDENOISE_CPU_CONV``, ``NEDENOISE_GPU_CONV``) are part of the key because
  they are chosen when a program is traced.
  Arguments that cannot be hashed (a module with a list field) get a fresh
  function each call.
  """
  cached = functools.lru_cache(maxsize)(lambda path, *args: make(*args))

  @functools.wraps(make)
  def get(*args):
    try:
      return cached((build.mode(), pallas_conv.mode()), *args)
    except TypeError:  # unhashable arguments
      return make(*args)

  return get


def uses_onednn(dtype, *shapes_ok: bool) -> bool:
  """Whether a float32 operation whose shape checks are ``shapes_ok`` goes to oneDNN on the CPU.

  The shape checks come first at every call site, so that a float64 or
  unsupported operation never triggers the build.
  """
  return jnp.dtype(dtype) == jnp.float32 and all(shapes_ok) and build.enabled()


def _gpu_or(other: Callable, z, kernel, strides, padding, pad_mode, sort_input: bool):
  """The Pallas kernel for a reflect-padded convolution on CUDA GPUs when ``NEDENOISE_GPU_CONV``
  asks for it and the shapes suit it; otherwise (and on other platforms)
  ``other(z, kernel, strides, padding, pad_mode=pad_mode)``."""
  rest = lambda z, k: other(z, k, strides, padding, pad_mode=pad_mode)  # noqa: E731
  path = pallas_conv.mode()
  if pad_mode != "reflect" or path == "xla" or not pallas_conv.supports(
      z.shape, kernel.shape, z.dtype, kernel.dtype, strides, padding, sort_input):
    return rest(z, kernel)
  if path == "interpret":
    return pallas_conv.sort_pool_conv3x3(z, kernel, sort_input, True, True)
  wgrad = path == "pallas"
  return jax.lax.platform_dependent(
      z, kernel, cuda=lambda z, k: pallas_conv.sort_pool_conv3x3(z, k, sort_input, False, wgrad), default=rest)


def conv2d(x: jax.Array, kernel: jax.Array, strides: int = 1, padding="VALID", *,
           pad_mode: Literal["zeros", "reflect"] = "zeros") -> jax.Array:
  """:func:`ops.conv2d`; on the CPU (float32) one oneDNN call, which also does the reflect padding;
  on a GPU with ``NEDENOISE_GPU_CONV=pallas`` (reflect, 3x3) one Pallas kernel."""
  return _gpu_or(_conv2d, x, kernel, strides, padding, pad_mode, False)


def _conv2d(x, kernel, strides, padding, *, pad_mode):
  if isinstance(padding, str) and padding != "VALID":
    return ops.conv2d(x, kernel, strides, padding, pad_mode=pad_mode)
  explicit = ops.explicit_padding(padding)
  reflect = pad_mode == "reflect" and any(v for p in explicit for v in p)
  if pad_mode in ("zeros", "reflect") and uses_onednn(
      x.dtype, kernel.dtype == x.dtype, onednn.supports(x.shape, kernel.shape, x.dtype, strides, explicit)):
    return jax.lax.platform_dependent(
        x, kernel, cpu=lambda x, k: onednn.conv(x, k, strides, explicit, reflect=reflect),
        default=lambda x, k: ops.conv2d(x, k, strides, padding, pad_mode=pad_mode))
  return ops.conv2d(x, kernel, strides, padding, pad_mode=pad_mode)


def sort_pool(x: jax.Array) -> jax.Array:
  """:func:`ops.sort_pool`; on the CPU (float32) one pass on every core.

  XLA's strided gather ran at a fraction of the memory bandwidth there.
  """
  if x.ndim >= 1 and x.shape[-1] % 2 == 0 and x.size and uses_onednn(x.dtype):
    return jax.lax.platform_dependent(x, cpu=onednn.sort_pool, default=ops.sort_pool)
  return ops.sort_pool(x)


def _reflect_padded(padding, pad_mode) -> tuple | None:
  """The explicit padding of a reflect-padded convolution that pads something, else None."""
  if pad_mode != "reflect" or isinstance(padding, str):
    return None
  explicit = ops.explicit_padding(padding)
  return explicit if any(v for p in explicit for v in p) else None


def sort_pool_conv2d(z: jax.Array, kernel: jax.Array, strides: int = 1, padding="VALID", *,
                     pad_mode: Literal["zeros", "reflect"] = "zeros") -> jax.Array:
  """:func:`ops.sort_pool_conv2d`; on the CPU (float32, reflect padding) the sort is done by the
  oneDNN call while it pads the input: no sorted copy is written out, and none is kept for the
  backward pass. On a GPU with ``NEDENOISE_GPU_CONV=pallas`` (reflect, 3x3) the Pallas kernel
  sorts as it loads."""
  return _gpu_or(_sort_pool_conv2d, z, kernel, strides, padding, pad_mode, True)


def _sort_pool_conv2d(z, kernel, strides, padding, *, pad_mode):
  explicit = _reflect_padded(padding, pad_mode)
  if explicit is not None and uses_onednn(
      z.dtype, kernel.dtype == z.dtype, z.shape[-1] % 2 == 0,
      onednn.supports(z.shape, kernel.shape, z.dtype, strides, explicit)):
    return jax.lax.platform_dependent(
        z, kernel, cpu=lambda z, k: onednn.sort_pool_conv(z, k, strides, explicit),
        default=lambda z, k: ops.sort_pool_conv2d(z, k, strides, explicit, pad_mode="reflect"))
  return _conv2d(sort_pool(z), kernel, strides, padding, pad_mode=pad_mode)


def affine_conv2d(x: jax.Array, theta: jax.Array, scale=None, strides: int = 1, padding=((1, 1), (1, 1)), *,
                  free_channels: int = 0, total: float = 1.0, sort_input: bool = False) -> jax.Array:
  """:func:`ops.affine_conv2d`; on the CPU (float32) the oneDNN call forms the kernel from ``theta``.

  It also returns the gradients of ``theta`` and ``scale`` itself: no kernel
  is written out or kept for the backward pass (NE DRUNet's training step
  holds 125 MiB less). Elsewhere the kernel is formed by XLA and the
  convolution dispatched as :func:`conv2d` / :func:`sort_pool_conv2d`.
  """
  explicit = _reflect_padded(padding, "reflect")
  s = jnp.ones((), x.dtype) if scale is None else jnp.asarray(scale)

  def generic(x, t, s):  # XLA forms the kernel; the convolution is dispatched on its own
    k = ops.affine_kernel(t, free_channels=free_channels, total=total)
    if scale is not None:
      k = k * s.astype(k.dtype)
    if sort_input:
      return sort_pool_conv2d(x, k, strides, padding, pad_mode="reflect")
    return conv2d(x, k, strides, padding, pad_mode="reflect")

  if explicit is not None and pallas_conv.mode() != "interpret" and uses_onednn(
      x.dtype, theta.dtype == x.dtype, s.dtype == x.dtype, not s.shape,
      not sort_input or x.shape[-1] % 2 == 0, 0 <= free_channels < theta.shape[2],
      onednn.supports(x.shape, theta.shape, x.dtype, strides, explicit)):
    return jax.lax.platform_dependent(
        x, theta, s,
        cpu=lambda x, t, s: onednn.affine_conv(x, t, s, strides, explicit, free_channels=free_channels,
                                               total=total, sort=sort_input),
        default=generic)
  return generic(x, theta, s)


def affine_kernel(theta: jax.Array, *, free_channels: int = 0, total: float = 1.0,
                  parametrization: ops.Parametrization = "centre") -> jax.Array:
  """:func:`ops.affine_kernel`; on the CPU (float32, ``centre``) formed exactly as :func:`affine_conv2d`'s
  oneDNN call forms it, bit for bit (for the kernel recorded or precomputed for inference)."""
  if parametrization == "centre" and theta.ndim == 4 and uses_onednn(
      theta.dtype, 0 <= free_channels < theta.shape[2]):
    return jax.lax.platform_dependent(
        theta, cpu=lambda t: onednn.affine_kernel(t, free_channels=free_channels, total=total),
        default=lambda t: ops.affine_kernel(t, free_channels=free_channels, total=total))
  return ops.affine_kernel(theta, free_channels=free_channels, total=total, parametrization=parametrization)


def _combination_grad(g, x, y, alpha):
  if x.dtype == y.dtype == g.dtype == jnp.float32 and build.enabled():
    # One pass of the oneDNN library's companion kernels, holding its cores
    # like the convolutions (see _scale_grad): NE DRUNet's training step
    # 1.934 -> 1.925 s (median of 40 interleaved steps; per round 0.995).
    return jax.lax.platform_dependent(g, x, y, alpha.astype(g.dtype), cpu=onednn.combination_grad,
                                      default=ops.combination_grad)
  return ops.combination_grad(g, x, y, alpha)


def _scale_grad(g, x, alpha):
  if x.dtype == g.dtype == jnp.float32 and x.size and build.enabled():
    # One pass that takes its cores like the convolutions: XLA's dot and
    # multiply, off the critical path, were scheduled beside the
    # convolutions and slowed them (NE DRUNet's step over ordinary's: 1.06 -> 1.04).
    return jax.lax.platform_dependent(g, x, alpha, cpu=onednn.scale_grad, default=ops.scale_grad)
  return ops.scale_grad(g, x, alpha)


_affine_combination = ops.affine_combination_with_grad(_combination_grad)
_scale_add = ops.scale_add_with_grad(_scale_grad)


def affine_combination(x: jax.Array, y: jax.Array, alpha) -> jax.Array:
  """:func:`ops.affine_combination`; on the CPU (float32) its gradient is one pass."""
  if jnp.shape(alpha) == () and jnp.shape(x) == jnp.shape(y) and jnp.ndim(x) >= 1 and jnp.size(x):
    return _affine_combination(x, y, jnp.asarray(alpha, jnp.result_type(x, y, alpha)))
  return ops.affine_combination(x, y, alpha)


def scale_add(x: jax.Array, y: jax.Array, alpha) -> jax.Array:
  """:func:`ops.scale_add`; on the CPU (float32) its gradient is one pass."""
  ops.check_scale_add(x, y, alpha)
  return _scale_add(x, y, jnp.asarray(alpha, jnp.result_type(x, y, alpha)))
