"""Float32 CPU operations through oneDNN: the JAX wrappers of the FFI targets :mod:`.build` registers.

Forward, input gradient and kernel gradient of convolutions with zero or
reflect padding, the latter also with SortPool fused into the padding and
with the affine kernel formed from its parameters inside the call; SortPool
itself; the one-pass gradients of ``alpha*x + y`` and ``y + alpha*(x - y)``.
Each is written as a ``jax.custom_vjp`` whose derivatives are the other maps
or the XLA compositions they equal (:mod:`nedenoise_jax.ops`), so every order
of differentiation works. The values are those of the XLA operations up to
float32 rounding (sums run in another order).

These run on the CPU only: :mod:`nedenoise_jax.kernels` picks them with
``jax.lax.platform_dependent`` when :func:`.build.enabled`. Check
:func:`supports` first. SortPool here sorts adjacent channel pairs, the
paper's layout.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from nedenoise_jax import ops

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
  (:func:`nedenoise_jax.kernels.conv2d`). Check :func:`supports` first.
  """
  padding = tuple((int(a), int(b)) for a, b in padding)
  if not supports(x.shape, kernel.shape, x.dtype, strides, padding) or kernel.dtype != x.dtype:
    raise ValueError(f"oneDNN conv does not take x {x.shape} {x.dtype}, kernel {kernel.shape} "
                     f"{kernel.dtype}, strides {strides}, padding {padding}")
  return _forward(x, kernel, int(strides), padding, threads_per_call(), bool(reflect))


def _sort_call(kind, threads, *args):
  out = jax.ShapeDtypeStruct(args[-1].shape, args[-1].dtype)
  return jax.ffi.ffi_call(f"nedenoise_sortpool_{kind}", out, vmap_method="sequential")(
      *args, threads=np.int64(threads))


# The sort applies to x a permutation that depends on x (piecewise constant):
# its gradient is that permutation's transpose, which for swaps of pairs is
# the permutation itself, linear in what it moves and with no gradient for x.

@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _sort_pool(x, threads):
  return _sort_call("fwd", threads, x)


def _sort_pool_fwd(x, threads):
  return _sort_pool(x, threads), x


def _sort_pool_bwd(threads, x, g):
  return (_permute(x, g, threads),)


_sort_pool.defvjp(_sort_pool_fwd, _sort_pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _permute(x, v, threads):
  return _sort_call("permute", threads, x, v)


def _permute_fwd(x, v, threads):
  return _permute(x, v, threads), x


def _permute_bwd(threads, x, ct):
  return jnp.zeros_like(x), _permute(x, ct, threads)


_permute.defvjp(_permute_fwd, _permute_bwd)


def sort_pool(x: jax.Array) -> jax.Array:
  """:func:`ops.sort_pool`, float32, on the CPU (one pass on every core)."""
  if x.dtype != jnp.float32 or x.ndim < 1 or x.shape[-1] % 2:
    raise ValueError(f"onednn.sort_pool takes float32 arrays with an even last axis, got {x.shape} {x.dtype}")
  return _sort_pool(x, threads_per_call())


# SortPool then a reflect-padded convolution, with the sort done while the
# input is padded: no sorted copy is written out or kept. The backward pass
# sorts z again while padding it for the kernel gradient, and permutes the
# input gradient while folding the padding back (one pass each). Those two
# fused maps differentiate as the compositions of the maps above they equal,
# so every order of differentiation works.

def _sorted_call(kind, out_shape, a, b, z, strides, padding, threads):
  args = (a, b) if z is None else (a, b, z)
  return jax.ffi.ffi_call(f"nedenoise_srconv_{kind}", jax.ShapeDtypeStruct(out_shape, a.dtype),
                          vmap_method="sequential")(
      *args, **_attrs(strides, padding, threads))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _sorted_forward(z, kernel, strides, padding, threads):
  return _sorted_call("fwd", _out_shape(z.shape, kernel.shape, strides, padding), z, kernel, None,
                      strides, padding, threads)


def _sorted_forward_fwd(z, kernel, strides, padding, threads):
  return _sorted_forward(z, kernel, strides, padding, threads), (z, kernel)


def _sorted_forward_bwd(strides, padding, threads, res, g):
  z, kernel = res
  return (_sorted_input_grad(g, kernel, z, strides, padding, threads),
          _sorted_kernel_grad(z, g, kernel.shape, strides, padding, threads))


_sorted_forward.defvjp(_sorted_forward_fwd, _sorted_forward_bwd)


def _plain_input_grad(g, kernel, z, strides, padding, threads):
  return _permute(z, _input_grad(g, kernel, z.shape, strides, padding, threads, True), threads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _sorted_input_grad(g, kernel, z, strides, padding, threads):
  """``_plain_input_grad`` in one call."""
  return _sorted_call("bwd_data", z.shape, g, kernel, z, strides, padding, threads)


def _sorted_input_grad_fwd(g, kernel, z, strides, padding, threads):
  return _sorted_input_grad(g, kernel, z, strides, padding, threads), (g, kernel, z)


def _sorted_input_grad_bwd(strides, padding, threads, res, ct):
  return jax.vjp(lambda *a: _plain_input_grad(*a, strides, padding, threads), *res)[1](ct)


_sorted_input_grad.defvjp(_sorted_input_grad_fwd, _sorted_input_grad_bwd)


def _plain_kernel_grad(z, g, kernel_shape, strides, padding, threads):
  return _kernel_grad(_sort_pool(z, threads), g, kernel_shape, strides, padding, threads, True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _sorted_kernel_grad(z, g, kernel_shape, strides, padding, threads):
  """``_plain_kernel_grad`` in one call."""
  return _sorted_call("bwd_weights", kernel_shape, z, g, None, strides, padding, threads)


def _sorted_kernel_grad_fwd(z, g, kernel_shape, strides, padding, threads):
  return _sorted_kernel_grad(z, g, kernel_shape, strides, padding, threads), (z, g)


def _sorted_kernel_grad_bwd(kernel_shape, strides, padding, threads, res, ct):
  return jax.vjp(lambda z, g: _plain_kernel_grad(z, g, kernel_shape, strides, padding, threads),
                 *res)[1](ct)


_sorted_kernel_grad.defvjp(_sorted_kernel_grad_fwd, _sorted_kernel_grad_bwd)


def sort_pool_conv(z: jax.Array, kernel: jax.Array, strides: int, padding) -> jax.Array:
  """``conv(x, k, strides, padding, reflect=True)`` of ``x = sort_pool(z)``, in one pass over ``z``."""
  padding = tuple((int(a), int(b)) for a, b in padding)
  if (not supports(z.shape, kernel.shape, z.dtype, strides, padding) or kernel.dtype != z.dtype
      or z.shape[-1] % 2):
    raise ValueError(f"oneDNN sort_pool_conv does not take z {z.shape} {z.dtype}, kernel "
                     f"{kernel.shape} {kernel.dtype}, strides {strides}, padding {padding}")
  return _sorted_forward(z, kernel, int(strides), padding, threads_per_call())


# The affine kernel map inside the call: the convolutions above (reflect
# padded, optionally after SortPool) with the kernel
# scale * A(theta), A = ops.affine_kernel(theta, free_channels=free,
# total=total) ("centre"), kmap = (free, total). The handlers form the kernel
# from theta while reordering it (the anchors summed from the reordered
# copy in cache, which is then scaled and its anchor taps written) and
# return the kernel gradient as the gradients of theta and scale: XLA
# neither writes the kernel out nor keeps it for the backward pass. Their
# derivatives are those of the compositions they equal (_unmapped_*), so
# every order of differentiation works.

# The C++ handlers' sort attribute: 0 none, 2 SortPool of adjacent pairs before the convolution.
_SORT_MODES = {False: 0, True: 2}


def _kmap_attrs(kernel_shape, kmap) -> dict:
  """The handlers' attributes for the kernel map ``kmap = (free, total)`` of a kernel of that shape."""
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
  if not sort:
    return _input_grad(g, k, z.shape, strides, padding, threads, True)
  return _sorted_input_grad(g, k, z, strides, padding, threads)


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
  if not sort:
    gk = _kernel_grad(x, g, k.shape, strides, padding, threads, True)
  else:
    gk = _sorted_kernel_grad(x, g, k.shape, strides, padding, threads)
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
                free_channels: int = 0, total: float = 1.0, sort: bool = False) -> jax.Array:
  """``conv(x, k, strides, padding, reflect=True)`` with ``k = scale * ops.affine_kernel(theta, ...)``.

  ``k`` is ``ops.affine_kernel(theta, free_channels=free_channels,
  total=total)`` (the ``centre`` parametrization) times the scalar ``scale``,
  formed inside the call; with ``sort`` the input is ``sort_pool(x)``, as in
  :func:`sort_pool_conv`. Float32.
  """
  padding = tuple((int(a), int(b)) for a, b in padding)
  if (not supports(x.shape, theta.shape, x.dtype, strides, padding) or theta.dtype != x.dtype
      or jnp.shape(scale) or jnp.result_type(scale) != x.dtype or (sort and x.shape[-1] % 2)
      or not 0 <= free_channels < theta.shape[2]):
    raise ValueError(f"oneDNN affine_conv does not take x {x.shape} {x.dtype}, theta {theta.shape} "
                     f"{theta.dtype}, scale {jnp.shape(scale)} {jnp.result_type(scale)}, strides "
                     f"{strides}, padding {padding}, free_channels {free_channels}, sort {sort}")
  return _mapped_forward(x, theta, scale, int(strides), padding, threads_per_call(), bool(sort),
                         (int(free_channels), float(total)))


def affine_kernel(theta: jax.Array, *, free_channels: int = 0, total: float = 1.0) -> jax.Array:
  """``ops.affine_kernel(theta, ...)`` ("centre") exactly as :func:`affine_conv` forms it (float32, CPU).

  For the kernel of a convolution that forms it itself, computed apart (to
  be recorded, or once for inference): the same values, bit for bit. It
  differentiates as ``ops.affine_kernel``.
  """
  if theta.dtype != jnp.float32 or theta.ndim != 4 or not 0 <= free_channels < theta.shape[2]:
    raise ValueError(f"onednn.affine_kernel takes a float32 HWIO theta and 0 <= free_channels < c_in, "
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
  # Differentiated as the XLA formula it equals (the path off the CPU).
  return jax.vjp(ops.scale_grad, *res)[1](ct)


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
  return jax.vjp(ops.combination_grad, *res)[1](ct)


combination_grad.defvjp(_combination_grad_fwd, _combination_grad_bwd)
