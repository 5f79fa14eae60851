"""The kernels layer: oneDNN CPU operations built where they can be, equal to XLA's, dispatched right."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nedenoise_jax import kernels, ops
from nedenoise_jax.kernels import build, onednn as onednn_ops

CASES = [  # x shape, kernel shape, strides, padding
    ((2, 9, 7, 3), (3, 3, 3, 5), 1, ((1, 1), (1, 1))),  # odd sizes, SAME
    ((1, 5, 6, 4), (3, 3, 4, 4), 1, ((0, 0), (0, 0))),  # VALID
    ((3, 8, 6, 4), (2, 2, 4, 6), 2, ((0, 0), (0, 0))),  # DRUNet's strided down-sampling
    ((1, 7, 5, 6), (1, 1, 6, 8), 1, ((0, 0), (0, 0))),  # UpConv's 1x1
    ((2, 6, 5, 2), (3, 3, 2, 4), 1, ((2, 2), (2, 2))),  # the input gradient of a VALID conv
    ((1, 6, 7, 3), (3, 3, 3, 2), 1, ((0, 2), (1, 0))),  # asymmetric
    ((1, 1, 1, 2), (1, 1, 2, 2), 1, ((0, 0), (0, 0))),  # one pixel
]


@pytest.fixture(scope="module")
def onednn():
  if not build.will_use():
    pytest.skip("no C++ compiler or oneDNN wheels here (the Linux x86-64 install has both)")
  assert build.available(), build.unavailable_reason()


def _random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _close(a, b, scale):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=2e-5 * scale)


def test_builds_where_the_toolchain_is_present():
  # On Linux x86-64 the package depends on the oneDNN wheels; with a compiler the build must work.
  if build.will_use():
    assert build.available(), build.unavailable_reason()
    assert build.unavailable_reason() is None
  else:
    assert not build.enabled() or build.available()


@pytest.mark.parametrize("xs,ks,s,pad", CASES)
def test_matches_xla_values_and_gradients(onednn, xs, ks, s, pad):
  x, k = _random(xs, 0), _random(ks, 1)
  y = jax.jit(lambda x, k: onednn_ops.conv(x, k, s, pad))(x, k)
  ref = ops._xla_conv2d(x, k, s, pad)
  assert y.shape == ref.shape and y.dtype == jnp.float32
  scale = float(np.sqrt(np.prod(ks[:3])))
  _close(y, ref, scale)
  g = _random(ref.shape, 2)
  dx, dk = jax.jit(jax.vjp(lambda x, k: onednn_ops.conv(x, k, s, pad), x, k)[1])(g)
  dxr, dkr = jax.vjp(lambda x, k: ops._xla_conv2d(x, k, s, pad), x, k)[1](g)
  _close(dx, dxr, scale)
  _close(dk, dkr, float(np.sqrt(np.prod(ref.shape[:3]))))


@pytest.mark.parametrize("xs,ks,s,pad", CASES[:3])
def test_second_order_gradients(onednn, xs, ks, s, pad):
  x, k = _random(xs, 3), _random(ks, 4) * 0.3

  def curvature(conv):
    inner = lambda x, k: jnp.sum(jnp.tanh(conv(x, k, s, pad)))  # noqa: E731
    return jax.grad(lambda x, k: jnp.sum(jax.grad(inner, (0, 1))(x, k)[1] ** 2), (0, 1))(x, k)

  got = jax.jit(lambda: curvature(onednn_ops.conv))()
  want = curvature(ops._xla_conv2d)
  for a, b in zip(got, want):
    _close(a, b, float(jnp.max(jnp.abs(b))) * 10)


def test_vmap(onednn):
  x, k = _random((3, 2, 6, 5, 2), 5), _random((3, 3, 2, 4), 6)
  pad = ((1, 1), (1, 1))
  got = jax.vmap(lambda x: onednn_ops.conv(x, k, 1, pad))(x)
  want = jnp.stack([ops._xla_conv2d(xi, k, 1, pad) for xi in x])
  _close(got, want, 10)


def _uses_onednn(fn, *args) -> bool:
  return "nedenoise_conv_fwd" in jax.jit(fn).lower(*args).as_text()


def test_conv2d_dispatch(onednn, monkeypatch):
  x, k = _random((1, 8, 8, 2), 7), _random((3, 3, 2, 4), 8)
  same = ((1, 1), (1, 1))
  assert _uses_onednn(lambda x, k: kernels.conv2d(x, k, 1, same), x, k)
  assert _uses_onednn(lambda x, k: kernels.conv2d(x, k, 1, "VALID"), x, k)
  # Windows that do not tile the input (stride 2 on 7 pixels) stay on XLA, with the same result.
  odd = _random((1, 7, 7, 2), 9)
  k2 = _random((2, 2, 2, 4), 10)
  assert not _uses_onednn(lambda x, k: kernels.conv2d(x, k, 2, "VALID"), odd, k2)
  np.testing.assert_allclose(kernels.conv2d(odd, k2, 2, "VALID"), ops._xla_conv2d(odd, k2, 2, "VALID"))
  with jax.enable_x64(True):  # float64 is XLA's
    x64, k64 = x.astype(jnp.float64), k.astype(jnp.float64)
    assert not _uses_onednn(lambda x, k: kernels.conv2d(x, k, 1, same), x64, k64)
  monkeypatch.setenv(build.ENV, "xla")
  assert not _uses_onednn(lambda x, k: kernels.conv2d(x, k, 1, same), x, k)


def test_gpu_lowering_keeps_xla_conv(onednn):
  # platform_dependent: lowered for a GPU, the program has no CPU custom call.
  x, k = _random((1, 8, 8, 2), 11), _random((3, 3, 2, 4), 12)
  lowered = jax.jit(lambda x, k: kernels.conv2d(x, k, 1, ((1, 1), (1, 1)))).trace(x, k).lower(
      lowering_platforms=("cuda",))
  text = lowered.as_text()
  assert "nedenoise_conv" not in text and "convolution" in text


def test_bad_mode_is_named(monkeypatch):
  monkeypatch.setenv(build.ENV, "fast")
  with pytest.raises(ValueError, match="NEDENOISE_CPU_CONV"):
    build.enabled()


def test_supports():
  assert onednn_ops.supports((1, 8, 8, 2), (3, 3, 2, 4), jnp.float32, 1, ((1, 1), (1, 1)))
  assert not onednn_ops.supports((1, 8, 8, 2), (3, 3, 2, 4), jnp.float16, 1, ((1, 1), (1, 1)))
  assert not onednn_ops.supports((1, 7, 7, 2), (2, 2, 2, 4), jnp.float32, 2, ((0, 0), (0, 0)))
  assert not onednn_ops.supports((1, 8, 8, 2), (3, 3, 3, 4), jnp.float32, 1, ((1, 1), (1, 1)))
  assert not onednn_ops.supports((1, 2, 2, 2), (5, 5, 2, 4), jnp.float32, 1, ((0, 0), (0, 0)))


def test_failed_build_falls_back_to_xla(monkeypatch, caplog):
  monkeypatch.setitem(build._state, "tried", True)
  monkeypatch.setitem(build._state, "error", "RuntimeError: no compiler")
  monkeypatch.setenv(build.ENV, "auto")
  assert not build.enabled()
  x, k = _random((1, 8, 8, 2), 13), _random((3, 3, 2, 4), 14)
  assert not _uses_onednn(lambda x, k: kernels.conv2d(x, k, 1, ((1, 1), (1, 1))), x, k)
  monkeypatch.setenv(build.ENV, "onednn")
  with pytest.raises(RuntimeError, match="no compiler"):
    build.enabled()


def test_build_cache_is_reused(onednn, tmp_path, monkeypatch):
  monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
  path = build._build()
  assert os.path.dirname(path) == str(tmp_path) and os.path.getsize(path) > 0
  mtime = os.path.getmtime(path)
  assert build._build() == path and os.path.getmtime(path) == mtime
  assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(path)]  # no temporary left


REFLECT_CASES = [  # x shape, kernel shape, reflect padding
    ((2, 9, 7, 3), (3, 3, 3, 5), ((1, 1), (1, 1))),  # odd sizes, SAME
    ((1, 6, 5, 4), (4, 4, 4, 2), ((1, 2), (2, 1))),  # even kernel, asymmetric
    ((1, 3, 4, 2), (7, 7, 2, 3), ((3, 3), (3, 3))),  # pads as wide as the image: reflected back
    ((2, 1, 5, 2), (3, 3, 2, 2), ((1, 1), (1, 1))),  # a 1-pixel axis is repeated
    ((1, 5, 5, 3), (3, 3, 3, 4), ((0, 2), (1, 0))),  # one-sided
]


def _xla_reflect(x, k, pad):
  return ops._xla_conv2d(ops.reflect_pad(x, pad), k, 1, "VALID")


@pytest.mark.parametrize("xs,ks,pad", REFLECT_CASES)
def test_reflect_padded_matches_xla(onednn, xs, ks, pad):
  # The padding inside the call (and its fold in the input gradient) equals
  # reflect_pad followed by a VALID convolution.
  x, k = _random(xs, 20), _random(ks, 21)
  conv = lambda x, k: onednn_ops.conv(x, k, 1, pad, reflect=True)  # noqa: E731
  y = jax.jit(conv)(x, k)
  ref = _xla_reflect(x, k, pad)
  scale = float(np.sqrt(np.prod(ks[:3])))
  assert y.shape == ref.shape
  _close(y, ref, scale)
  g = _random(ref.shape, 22)
  dx, dk = jax.jit(jax.vjp(conv, x, k)[1])(g)
  dxr, dkr = jax.vjp(lambda x, k: _xla_reflect(x, k, pad), x, k)[1](g)
  _close(dx, dxr, scale * 4)  # border pixels sum up to 4 positions
  _close(dk, dkr, float(np.sqrt(np.prod(ref.shape[:3]))))


def test_reflect_padded_second_order(onednn):
  x, k = _random((2, 7, 6, 3), 23), _random((3, 3, 3, 4), 24) * 0.3
  pad = ((1, 1), (1, 1))

  def curvature(conv):
    inner = lambda x, k: jnp.sum(jnp.tanh(conv(x, k)))  # noqa: E731
    return jax.grad(lambda x, k: jnp.sum(jax.grad(inner, (0, 1))(x, k)[0] ** 2), (0, 1))(x, k)

  got = jax.jit(lambda: curvature(lambda x, k: onednn_ops.conv(x, k, 1, pad, reflect=True)))()
  want = curvature(lambda x, k: _xla_reflect(x, k, pad))
  for a, b in zip(got, want):
    _close(a, b, float(jnp.max(jnp.abs(b))) * 10)


def test_reflect_padded_conv2d_dispatch(onednn):
  x, k = _random((1, 9, 8, 2), 25), _random((3, 3, 2, 4), 26)
  same = ((1, 1), (1, 1))
  text = jax.jit(lambda x, k: kernels.conv2d(x, k, 1, same, pad_mode="reflect")).lower(x, k).as_text()
  assert "nedenoise_rconv_fwd" in text and "gather" not in text
  # Lowered for a GPU: reflect_pad and XLA's convolution.
  gpu = jax.jit(lambda x, k: kernels.conv2d(x, k, 1, same, pad_mode="reflect")).trace(x, k).lower(
      lowering_platforms=("cuda",)).as_text()
  assert "nedenoise" not in gpu and "convolution" in gpu
  np.testing.assert_allclose(kernels.conv2d(x, k, 1, same, pad_mode="reflect"),
                             _xla_reflect(x, k, same), atol=1e-5)
  with pytest.raises(ValueError, match="explicit padding"):
    kernels.conv2d(x, k, 1, "SAME", pad_mode="reflect")
  with pytest.raises(ValueError, match="pad_mode"):
    kernels.conv2d(x, k, 1, same, pad_mode="wrap")


def test_sort_pool_matches_xla(onednn):
  xla = ops.sort_pool
  cpu = onednn_ops.sort_pool
  x = _random((3, 5, 7, 8), 27)
  partner = 1
  x = x.at[0, 0, 0, 0].set(x[0, 0, 0, partner])  # a tie: min <- first, max <- second
  g = _random(x.shape, 28)
  np.testing.assert_array_equal(jax.jit(cpu)(x), xla(x))
  got = jax.jit(jax.vjp(cpu, x)[1])(g)[0]
  np.testing.assert_array_equal(got, jax.vjp(xla, x)[1](g)[0])

  def curvature(sp):
    inner = lambda x: jnp.sum(jnp.sin(sp(x)) * g)  # noqa: E731
    return jax.grad(lambda x: jnp.sum(jax.grad(inner)(x) ** 2))(x)

  np.testing.assert_allclose(jax.jit(lambda: curvature(cpu))(), curvature(xla), rtol=1e-6, atol=1e-6)
  v = _random((2, 3, 4, 6), 29)
  np.testing.assert_array_equal(jax.vmap(cpu)(v), jnp.stack([xla(vi) for vi in v]))
  # A NaN is never lost: it stays in one output of its pair.
  xn = x.at[1, 1, 1, 1].set(jnp.nan)
  assert bool(jnp.isnan(cpu(xn)[1, 1, 1]).any())
  with pytest.raises(ValueError, match="even last axis"):
    cpu(_random((2, 3), 30))


def test_sort_pool_dispatch(onednn):
  x = _random((2, 4, 4, 6), 31)
  text = jax.jit(kernels.sort_pool).lower(x).as_text()
  assert "nedenoise_sortpool_fwd" in text
  with jax.enable_x64(True):
    x64 = x.astype(jnp.float64)
    assert "nedenoise" not in jax.jit(kernels.sort_pool).lower(x64).as_text()


@pytest.mark.parametrize("xs,ks,pad", REFLECT_CASES[:2] + REFLECT_CASES[3:])
def test_sort_pool_conv_matches_xla(onednn, xs, ks, pad):
  # SortPool fused into the padding: values, gradients and second order as sort_pool then conv.
  xs = xs[:3] + (2 * xs[3],)
  ks = ks[:2] + (2 * ks[2], ks[3])
  z, k = _random(xs, 32), _random(ks, 33) * 0.3
  xla = ops.sort_pool
  fused = lambda z, k: onednn_ops.sort_pool_conv(z, k, 1, pad)  # noqa: E731
  plain = lambda z, k: _xla_reflect(xla(z), k, pad)  # noqa: E731
  scale = float(np.sqrt(np.prod(ks[:3])))
  _close(jax.jit(fused)(z, k), plain(z, k), scale)
  g = _random(plain(z, k).shape, 34)
  for a, b in zip(jax.jit(jax.vjp(fused, z, k)[1])(g), jax.vjp(plain, z, k)[1](g)):
    _close(a, b, scale * 4 * float(np.sqrt(xs[0] * xs[1] * xs[2])))

  def curvature(f):
    inner = lambda z, k: jnp.sum(jnp.tanh(f(z, k)))  # noqa: E731
    return jax.grad(lambda z, k: jnp.sum(jax.grad(inner, (0, 1))(z, k)[0] ** 2), (0, 1))(z, k)

  for a, b in zip(jax.jit(lambda: curvature(fused))(), curvature(plain)):
    _close(a, b, float(jnp.max(jnp.abs(b))) * 10)


def test_ne_network_sorts_inside_its_convolutions(onednn):
  from nedenoise_jax import models
  net = models.create("fdncnn", mode="norm_equiv", blind=True, features=8, depth=4)
  x = _random((1, 11, 9, 1), 35)
  v = net.init(jax.random.key(0), x)
  text = jax.jit(net.apply).lower(v, x).as_text()
  # Every convolution forms its kernel from the parameters itself; the three
  # after a SortPool sort their input while padding it.
  assert text.count("nedenoise_mconv_fwd") == 4 and text.count("sort = 2") == 3
  assert "nedenoise_sortpool_fwd" not in text and "nedenoise_srconv" not in text
  assert "gather" not in text
  # Adjacent pairs, as the parameters are stored: no kernel is permuted.
  assert "sort = 1" not in text and "transpose" not in text
  # The training step's backward pass sorts, permutes and maps the kernel inside the calls too.
  grad = jax.jit(jax.grad(lambda v: jnp.sum(net.apply(v, x) ** 2))).lower(v).as_text()
  for target, n in (("mconv_fwd", 4), ("mconv_bwd_data", 3), ("mconv_bwd_weights", 4)):
    assert grad.count(f"nedenoise_{target}") == n, target
  assert "nedenoise_sortpool" not in grad and "nedenoise_srconv" not in grad


AFFINE_CASES = [  # x shape, theta shape, reflect padding, free channels, total, sort
    ((2, 9, 7, 3), (3, 3, 3, 5), ((1, 1), (1, 1)), 0, 1.0, None),  # odd sizes
    ((1, 7, 6, 2), (3, 3, 2, 6), ((1, 1), (1, 1)), 1, 1.0, None),  # a free noise-map channel
    ((2, 6, 5, 6), (3, 3, 6, 4), ((1, 1), (1, 1)), 0, 0.0, "pairs"),  # zero-sum, after a SortPool
    ((1, 6, 7, 6), (4, 4, 6, 3), ((1, 2), (2, 1)), 0, 1.0, "pairs"),  # even kernel, asymmetric
    ((1, 7, 6, 2), (5, 5, 2, 3), ((2, 2), (2, 2)), 1, 1.0, None),  # 5x5: anchor (2, 2)
    ((2, 5, 6, 32), (3, 3, 32, 48), ((1, 1), (1, 1)), 0, 1.0, "pairs"),  # blocked kernel layouts
    ((1, 6, 5, 32), (3, 3, 32, 1), ((1, 1), (1, 1)), 0, 1.0, None),  # one output channel
]


def _affine_reference(x, theta, scale, pad, free, total, sort):
  k = ops.affine_kernel(theta, free_channels=free, total=total) * scale
  return _xla_reflect(ops.sort_pool(x) if sort else x, k, pad)


@pytest.mark.parametrize("xs,ks,pad,free,total,sort", AFFINE_CASES)
def test_affine_conv_matches_xla(onednn, xs, ks, pad, free, total, sort):
  # The kernel formed inside the call (scaled, anchors written over the
  # reordered parameters) and the gradients of theta and scale from it.
  x, theta, scale = _random(xs, 40), _random(ks, 41) * 0.3, jnp.float32(0.7)
  conv = lambda x, t, s: onednn_ops.affine_conv(x, t, s, 1, pad, free_channels=free, total=total,  # noqa: E731
                                              sort=sort)
  ref = lambda x, t, s: _affine_reference(x, t, s, pad, free, total, sort)  # noqa: E731
  y, want = jax.jit(conv)(x, theta, scale), ref(x, theta, scale)
  size = float(np.sqrt(np.prod(ks[:3])))
  assert y.shape == want.shape
  _close(y, want, size)
  g = _random(want.shape, 42)
  got = jax.jit(jax.vjp(conv, x, theta, scale)[1])(g)
  exp = jax.vjp(ref, x, theta, scale)[1](g)
  assert got[2].shape == () and float(got[1][(*ops.anchor_tap(ks[:2]), 0)].max()) == 0.0  # unused anchors
  for a, b in zip(got, exp):
    _close(a, b, float(jnp.max(jnp.abs(b))) * 4)

  def curvature(f):  # second order: through the gradients of x, theta and scale
    inner = lambda x, t, s: jnp.sum(jnp.tanh(f(x, t, s)))  # noqa: E731
    return jax.grad(lambda x, t, s: sum(jnp.sum(d ** 2) for d in jax.grad(inner, (0, 1, 2))(x, t, s)),
                    (0, 1, 2))(x, theta, scale)

  for a, b in zip(jax.jit(lambda: curvature(conv))(), curvature(ref)):
    _close(a, b, float(jnp.max(jnp.abs(b))) * 10)


def test_affine_conv_vmap_and_errors(onednn):
  pad = ((1, 1), (1, 1))
  xs, ts = _random((3, 1, 6, 5, 2), 43), _random((3, 3, 3, 2, 4), 44)
  conv = lambda x, t: onednn_ops.affine_conv(x, t, jnp.float32(1.0), 1, pad)  # noqa: E731
  ref = lambda x, t: _affine_reference(x, t, 1.0, pad, 0, 1.0, None)  # noqa: E731
  _close(jax.jit(jax.vmap(conv))(xs, ts), jax.vmap(ref)(xs, ts), 3.0)
  with pytest.raises(ValueError, match="affine_conv does not take"):
    onednn_ops.affine_conv(xs[0], ts[0], jnp.ones((2,)), 1, pad)
  with pytest.raises(ValueError, match="affine_conv does not take"):
    onednn_ops.affine_conv(xs[0], ts[0], jnp.float32(1.0), 1, pad, free_channels=2)


@pytest.mark.parametrize("ks,free,total", [((3, 3, 5, 7), 0, 1.0), ((3, 3, 2, 64), 1, 1.0),
                                           ((4, 4, 3, 2), 0, 0.0)])
def test_cpu_affine_kernel_is_the_kernel_the_call_forms(onednn, ks, free, total):
  theta = _random(ks, 45)
  k = jax.jit(lambda t: onednn_ops.affine_kernel(t, free_channels=free, total=total))(theta)
  np.testing.assert_allclose(k, ops.affine_kernel(theta, free_channels=free, total=total), rtol=0, atol=1e-5)
  sums = ops.kernel_sums(k, free_channels=free)
  np.testing.assert_allclose(sums, np.full(ks[3], total), atol=1e-5)
  # Bit for bit the kernel of affine_conv: the convolution with it equals the call.
  x, pad = _random((1, 6, 7, ks[2]), 46), ops.same_padding(ks[:2])
  np.testing.assert_array_equal(
      jax.jit(lambda x, t: onednn_ops.affine_conv(x, t, jnp.float32(1.0), 1, pad, free_channels=free,
                                                total=total))(x, theta),
      jax.jit(lambda x, k: onednn_ops.conv(x, k, 1, pad, reflect=True))(x, k))
  g = _random(ks, 47)
  _close(jax.vjp(lambda t: onednn_ops.affine_kernel(t, free_channels=free, total=total), theta)[1](g)[0],
         jax.vjp(lambda t: ops.affine_kernel(t, free_channels=free, total=total), theta)[1](g)[0], 1.0)


def test_affine_conv2d_dispatch(onednn):
  x, theta, pad = _random((1, 9, 8, 4), 48), _random((3, 3, 4, 4), 49), ((1, 1), (1, 1))
  f = lambda x, t, s: kernels.affine_conv2d(x, t, s, 1, pad, sort_input=True)  # noqa: E731
  s = jnp.float32(0.5)
  assert "nedenoise_mconv_fwd" in jax.jit(f).lower(x, theta, s).as_text()
  gpu = jax.jit(f).trace(x, theta, s).lower(lowering_platforms=("cuda",)).as_text()
  assert "nedenoise" not in gpu and "convolution" in gpu
  _close(f(x, theta, s), _affine_reference(x, theta, s, pad, 0, 1.0, "pairs"), 6.0)
  # float64, or no padding: the composition in XLA.
  x64 = x.astype(jnp.float64) if jax.config.jax_enable_x64 else None
  if x64 is not None:
    assert "nedenoise" not in jax.jit(f).lower(x64, theta.astype(jnp.float64), s.astype(jnp.float64)).as_text()
  text = jax.jit(lambda x, t: kernels.affine_conv2d(x, t, None, 1, ((0, 0), (0, 0)))).lower(x, theta).as_text()
  assert "nedenoise_mconv" not in text


def test_scale_grad_matches_xla(onednn):
  # (alpha*g, sum(g*x)) in one pass: values, its own gradient and the error.
  g, x = _random((3, 17, 9, 10), 40), _random((3, 17, 9, 10), 41) + 5.0
  alpha = jnp.float32(0.3)
  gx, ga = jax.jit(onednn_ops.scale_grad)(g, x, alpha)
  np.testing.assert_array_equal(gx, alpha * g)
  # Float32 products summed: the error scales with sum |g*x| (here ~100x the sum).
  exact, size = np.vdot(np.float64(g), np.float64(x)), np.sum(np.abs(np.float64(g) * np.float64(x)))
  assert abs(float(ga) - exact) <= 1e-6 * size
  ct = (_random(g.shape, 42), jnp.float32(1.7))
  got = jax.vjp(onednn_ops.scale_grad, g, x, alpha)[1](ct)
  want = jax.vjp(ops.scale_grad, g, x, alpha)[1](ct)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert "nedenoise_scale_grad" in jax.jit(jax.grad(lambda x, a: jnp.sum(kernels.scale_add(x, x, a) ** 2), (0, 1))).lower(
      x, alpha).as_text()
  with pytest.raises(ValueError, match="one shape"):
    onednn_ops.scale_grad(g, x[:1], alpha)


def test_combination_grad_matches_xla(onednn):
  # (alpha*g, g - alpha*g, sum(g*(x - y))) in one pass: values, its own gradient and the error.
  g, x, y = _random((3, 17, 9, 10), 50), _random((3, 17, 9, 10), 51) + 5.0, _random((3, 17, 9, 10), 52) - 3.0
  alpha = jnp.float32(0.3)
  gx, gy, ga = jax.jit(onednn_ops.combination_grad)(g, x, y, alpha)
  np.testing.assert_array_equal(gx, alpha * g)
  np.testing.assert_array_equal(gy, g - alpha * g)
  d = np.float64(x) - np.float64(y)
  exact, size = np.vdot(np.float64(g), d), np.sum(np.abs(np.float64(g) * d))
  assert abs(float(ga) - exact) <= 1e-6 * size
  ct = (_random(g.shape, 53), _random(g.shape, 54), jnp.float32(1.7))
  got = jax.vjp(onednn_ops.combination_grad, g, x, y, alpha)[1](ct)
  want = jax.vjp(ops.combination_grad, g, x, y, alpha)[1](ct)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # affine_combination's gradient takes it on the CPU, and equals XLA's formula.
  loss = lambda x, y, a: jnp.sum(jnp.sin(kernels.affine_combination(x, y, a)))  # noqa: E731
  assert "nedenoise_combination_grad" in jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, y, alpha).as_text()
  cos = jnp.cos(kernels.affine_combination(x, y, alpha))
  got, want = jax.grad(loss, (0, 1, 2))(x, y, alpha), ops.combination_grad(cos, x, y, alpha)
  for a, b in zip(got[:2], want[:2]):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(got[2], want[2], rtol=1e-5)
  with pytest.raises(ValueError, match="one shape"):
    onednn_ops.combination_grad(g, x, y[:1], alpha)


def test_ne_drunet_gradients_sharded_over_8_devices_equal_one_device(onednn):
  # The library's custom calls (sorted convolutions, scale_grad for the
  # ResBlocks' alpha) inside a batch-sharded program: the same gradients,
  # alpha's summed over the whole batch.
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  from nedenoise_jax import models
  assert jax.device_count() >= 8
  net = models.create("drunet", mode="norm_equiv", blind=False, features=(4, 8), blocks=1)
  x = _random((8, 12, 10, 1), 50)
  s = jnp.linspace(0.1, 0.5, 8, dtype=jnp.float32)
  v = net.init(jax.random.key(0), x[:1], s[:1])
  v = jax.tree_util.tree_map(lambda p: p + 0.02, v)
  loss = lambda v, x, s: jnp.mean((net.apply(v, x + s[:, None, None, None], s) - x) ** 2)  # noqa: E731
  grad = jax.grad(loss)
  assert "nedenoise_scale_grad" in jax.jit(grad).lower(v, x, s).as_text()
  one = jax.jit(grad)(v, x, s)
  mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
  shard, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  eight = jax.jit(grad, in_shardings=(rep, shard, shard), out_shardings=rep)(v, x, s)
  chex.assert_trees_all_close(eight, one, rtol=1e-4, atol=1e-6)


def test_cache_key_covers_the_source_flags_and_versions(tmp_path, monkeypatch):
  # A library built from another source, with other flags or against another oneDNN/JAX is another file.
  tc = {"cxx": "c++", "include": "/inc", "lib": "/lib", "ffi_include": "/ffi"}
  versions = {"compiler": "g++ 12", "jax": "0.10", "jaxlib": "0.10", "onednn-devel-cpu-gomp": "2023.2.0",
              "dnnl_version.h": "#define DNNL_VERSION_MINOR 2"}
  monkeypatch.setattr(build, "_versions", lambda cxx, include: dict(versions))
  key = build.cache_key(tc)
  assert build.cache_key(dict(tc)) == key  # deterministic
  assert build.cache_key({**tc, "include": "/other"}) != key
  for name, value in (("dnnl_version.h", "#define DNNL_VERSION_MINOR 13"), ("jaxlib", "0.11"),
                      ("compiler", "clang 18")):
    monkeypatch.setattr(build, "_versions", lambda cxx, include, n=name, v=value: {**versions, n: v})
    assert build.cache_key(tc) != key, name
  monkeypatch.setattr(build, "_versions", lambda cxx, include: dict(versions))
  command = build._compile_command
  monkeypatch.setattr(build, "_compile_command", lambda tc, out: command(tc, out) + ["-march=native"])
  assert build.cache_key(tc) != key
  monkeypatch.setattr(build, "_compile_command", command)
  source = tmp_path / "onednn_conv.cc"
  source.write_bytes(open(build._SOURCE, "rb").read() + b"\n")
  monkeypatch.setattr(build, "_SOURCE", str(source))
  assert build.cache_key(tc) != key


def test_nothing_is_built_when_the_default_backend_is_not_the_cpu(monkeypatch):
  def no_build(*a, **k):
    raise AssertionError("the CPU backend was built or loaded in a GPU process")

  monkeypatch.delenv(build.ENV, raising=False)
  monkeypatch.setattr(build.jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(build, "available", no_build)
  monkeypatch.setattr(build, "_load", no_build)
  assert build.enabled() is False
