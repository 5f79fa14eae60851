"""Pure ops: constraints, sort pooling, affine combination, shuffles, padding, sigma maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nedenoise_jax import kernels, ops


def _theta(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * 0.1, jnp.float32)


@pytest.mark.parametrize("parametrization", ops.PARAMETRIZATIONS)
@pytest.mark.parametrize("shape,free", [((3, 3, 5, 4), 0), ((3, 3, 6, 8), 1), ((2, 2, 4, 6), 0),
                                        ((1, 1, 7, 12), 0), ((3, 3, 1, 2), 0)])
@pytest.mark.parametrize("total", [1.0, 0.0])
def test_affine_kernel_sums(parametrization, shape, free, total):
  k = ops.affine_kernel(_theta(shape), free_channels=free, total=total,
                        parametrization=parametrization)
  assert k.shape == shape and k.dtype == jnp.float32
  np.testing.assert_allclose(ops.kernel_sums(k, free_channels=free), total, atol=1e-6)
  if free:  # free channels pass through untouched
    np.testing.assert_array_equal(k[:, :, -free:], _theta(shape)[:, :, -free:])


def test_centre_parametrization_is_surjective_and_named_anchor():
  # Any kernel that sums to 1 is its own parameter: only the anchor tap is derived.
  target = _theta((3, 3, 4, 5))
  target = target - target.sum(axis=(0, 1, 2)) / 36 + 1 / 36
  np.testing.assert_allclose(ops.affine_kernel(target), target, atol=1e-6)
  # The anchor receives no gradient; every other tap does.
  g = jax.grad(lambda t: jnp.sum(ops.affine_kernel(t) ** 3))(_theta((3, 3, 2, 1)))
  assert ops.anchor_tap((3, 3)) == (1, 1) and float(g[1, 1, 0, 0]) == 0.0
  assert np.count_nonzero(np.asarray(g)) == 17
  assert ops.anchor_tap((2, 2)) == (0, 0) and ops.anchor_tap((1, 1)) == (0, 0)


def test_roll_matches_reference_formula():
  # The authors' formula, written here in numpy on an OIHW kernel:
  # per output filter, flatten (C_in, kh, kw), k = roll(t, 1) - t + 1/n.
  theta = np.asarray(_theta((3, 3, 4, 5), seed=3))
  oihw = theta.transpose(3, 2, 0, 1)
  flat = oihw.reshape(5, -1)
  ref = (np.roll(flat, 1, axis=1) - flat + 1 / flat.shape[1]).reshape(oihw.shape)
  got = np.asarray(ops.affine_kernel(jnp.asarray(theta), parametrization="roll"))
  np.testing.assert_allclose(got.transpose(3, 2, 0, 1), ref, atol=1e-7)


def test_affine_kernel_errors():
  with pytest.raises(ValueError, match="rank 4"):
    ops.affine_kernel(jnp.ones((3, 3, 2)))
  with pytest.raises(ValueError, match="free_channels"):
    ops.affine_kernel(jnp.ones((3, 3, 2, 2)), free_channels=2)
  with pytest.raises(ValueError, match="parametrization"):
    ops.affine_kernel(jnp.ones((3, 3, 2, 2)), parametrization="bogus")


def test_sort_pool():
  x = jnp.asarray([[3.0, 1.0, -2.0, 5.0, 7.0, 7.0]])
  np.testing.assert_array_equal(ops.sort_pool(x), [[1.0, 3.0, -2.0, 5.0, 7.0, 7.0]])
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3, 8)), jnp.float32)
  # NE: commutes with x -> a*x + b for a > 0 (exactly: it only selects values).
  for a, b in ((10.0, 50.0), (0.3, -1.2)):
    np.testing.assert_allclose(ops.sort_pool(a * x + b), a * ops.sort_pool(x) + b, rtol=1e-6)
  y = ops.sort_pool(x)
  assert bool(jnp.all(y[..., 0::2] <= y[..., 1::2]))
  np.testing.assert_allclose(jnp.sort(y, -1), jnp.sort(x, -1))
  with pytest.raises(ValueError, match="even number of channels"):
    ops.sort_pool(jnp.ones((1, 2, 2, 3)))


def test_affine_combination_is_ne():
  x, y = jnp.asarray([1.0, 2.0]), jnp.asarray([5.0, -1.0])
  np.testing.assert_allclose(ops.affine_combination(x, y, 0.25), 0.25 * x + 0.75 * y)
  np.testing.assert_allclose(ops.affine_combination(3 * x + 7, 3 * y + 7, 0.25),
                             3 * ops.affine_combination(x, y, 0.25) + 7, rtol=1e-6)


@pytest.mark.parametrize("shape", [(3,), (2, 5, 7, 6), (1, 9, 1, 1)])
@pytest.mark.parametrize("lib", [ops, kernels], ids=["ops", "kernels"])
def test_affine_combination_gradient_equals_autodiff(lib, dtype, shape):
  """The hand-written VJP (per-channel sums for alpha) = autodiff of the plain formula."""
  rng = np.random.default_rng(4)
  x, y, w = (jnp.asarray(rng.standard_normal(shape) * 50 - 20, dtype) for _ in range(3))
  alpha = jnp.asarray(0.3, dtype)

  def loss(f):
    return lambda x, y, a: jnp.sum(jnp.sin(f(x, y, a)) * w)

  got = jax.grad(loss(lib.affine_combination), argnums=(0, 1, 2))(x, y, alpha)
  want = jax.grad(loss(lambda x, y, a: y + a * (x - y)), argnums=(0, 1, 2))(x, y, alpha)
  tol = 1e-5 if dtype == jnp.float32 else 1e-12
  for g, v in zip(got, want):
    assert g.dtype == v.dtype and g.shape == v.shape
    np.testing.assert_allclose(g, v, rtol=tol, atol=tol * float(jnp.max(jnp.abs(v))))
  # Mixed dtypes promote as the plain formula does; each gradient has its input's dtype.
  xb = x.astype(jnp.bfloat16)
  assert lib.affine_combination(xb, y, alpha).dtype == (y + alpha * (xb - y)).dtype
  grads = jax.grad(lambda x, y: jnp.sum(lib.affine_combination(x, y, alpha)), argnums=(0, 1))(xb, y)
  assert grads[0].dtype == jnp.bfloat16 and grads[1].dtype == dtype
  # Broadcast or empty operands take the plain (autodiff) path.
  assert lib.affine_combination(x, jnp.zeros((), dtype), 0.5).shape == x.shape
  assert lib.affine_combination(jnp.zeros((0, 3)), jnp.zeros((0, 3)), 0.5).shape == (0, 3)


@pytest.mark.parametrize("shape", [(3,), (2, 5, 7, 6)])
def test_hand_differentiated_sums_equal_autodiff(dtype, shape):
  """bias_add (a dot-product gradient) = autodiff of y + b; inner and channel_sums = sums."""
  rng = np.random.default_rng(5)
  x, y, w = (jnp.asarray(rng.standard_normal(shape) * 50 - 20, dtype) for _ in range(3))
  bias = jnp.asarray(rng.standard_normal(shape[-1]), dtype)
  tol = 1e-5 if dtype == jnp.float32 else 1e-12

  def check(f, plain, *args):
    loss = lambda g: lambda *a: jnp.sum(jnp.sin(g(*a)) * w)  # noqa: E731
    np.testing.assert_allclose(f(*args), plain(*args), rtol=tol)
    argnums = tuple(range(len(args)))
    for g, v in zip(jax.grad(loss(f), argnums)(*args), jax.grad(loss(plain), argnums)(*args)):
      assert g.dtype == v.dtype and g.shape == v.shape
      np.testing.assert_allclose(g, v, rtol=tol, atol=tol * float(jnp.max(jnp.abs(v))))

  check(ops.bias_add, lambda y, b: y + b, y, bias)
  np.testing.assert_allclose(ops.inner(x, y), jnp.sum(x * y), rtol=tol)
  np.testing.assert_allclose(ops.channel_sums(x), jnp.sum(x.reshape(-1, shape[-1]), axis=0),
                             rtol=tol, atol=tol * 50 * x.size)
  assert ops.channel_sums(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
  assert ops.inner(x.astype(jnp.bfloat16), x.astype(jnp.bfloat16)).dtype == jnp.float32
  with pytest.raises(ValueError, match=r"bias of shape \(%d,\)" % shape[-1]):
    ops.bias_add(y, bias[:-1])


def test_pixel_shuffle_order_and_inverse():
  # PyTorch order: channel c*4 + i*2 + j -> sub-pixel (i, j) of channel c.
  x = jnp.arange(8.0).reshape(1, 1, 1, 8)
  y = ops.pixel_shuffle(x, 2)
  assert y.shape == (1, 2, 2, 2)
  np.testing.assert_array_equal(y[0, :, :, 0], [[0, 1], [2, 3]])
  np.testing.assert_array_equal(y[0, :, :, 1], [[4, 5], [6, 7]])
  z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 4, 3)))
  np.testing.assert_array_equal(ops.pixel_shuffle(ops.pixel_unshuffle(z, 2), 2), z)
  with pytest.raises(ValueError, match="divisible"):
    ops.pixel_unshuffle(jnp.ones((1, 3, 4, 1)), 2)
  with pytest.raises(ValueError, match="divisible"):
    ops.pixel_shuffle(jnp.ones((1, 3, 4, 3)), 2)


def test_reflect_pad_any_size():
  x = jnp.arange(3.0).reshape(1, 1, 3, 1)
  np.testing.assert_array_equal(ops.reflect_pad(x, ((0, 0), (1, 1)))[0, 0, :, 0], [1, 0, 1, 2, 1])
  one = jnp.ones((1, 1, 1, 2)) * 4
  np.testing.assert_array_equal(ops.reflect_pad(one, ((1, 1), (1, 1))), jnp.full((1, 3, 3, 2), 4.0))
  assert ops.reflect_pad(x, ((2, 2), (5, 5))).shape == (1, 5, 13, 1)


def test_pad_to_multiple_uses_each_images_mean():
  x = jnp.stack([jnp.zeros((5, 3, 1)), jnp.full((5, 3, 1), 7.0)])
  y, (h, w) = ops.pad_to_multiple(x, 4)
  assert y.shape == (2, 8, 4, 1) and (h, w) == (5, 3)
  np.testing.assert_array_equal(y[0], 0.0)
  np.testing.assert_allclose(y[1], 7.0, rtol=1e-6)
  np.testing.assert_array_equal(y[:, :5, :3], x)
  same, hw = ops.pad_to_multiple(jnp.ones((1, 8, 8, 1)), 8)
  assert same.shape == (1, 8, 8, 1) and hw == (8, 8)


def test_sigma_map_forms_and_errors():
  x = jnp.zeros((2, 3, 4, 1))
  for s in (0.1, jnp.float32(0.1), jnp.asarray([0.1, 0.1]), jnp.full((2, 1, 1, 1), 0.1),
            jnp.full((2, 3, 4, 1), 0.1), 1):
    m = ops.sigma_map(s, x)
    assert m.shape == (2, 3, 4, 1) and m.dtype == x.dtype
  np.testing.assert_array_equal(ops.sigma_map(jnp.asarray([1.0, 2.0]), x)[:, 0, 0, 0], [1, 2])
  for bad in (jnp.ones((3,)), jnp.ones((2, 3, 4)), jnp.ones((2, 3, 4, 2)), jnp.ones((1, 3, 4, 1))):
    with pytest.raises(ValueError, match=r"expected a scalar, \(2,\)"):
      ops.sigma_map(bad, x)
  with pytest.raises(ValueError, match="real number"):
    ops.sigma_map(jnp.asarray(True), x)



_DN = ("NHWC", "HWIO", "NHWC")


def _grads(fn, *args):
  """Gradients of a non-linear scalar function of ``fn(*args)``, w.r.t. every argument."""
  return jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))), argnums=tuple(range(len(args))))(*args)


@pytest.mark.parametrize("ksize", [(3, 3), (2, 2), (1, 3), (5, 4)])
@pytest.mark.parametrize("size", [(7, 9), (5, 5), (4, 11)])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_conv2d_and_its_gradients_equal_lax(ksize, size, padding):
  """Zero-padded convolutions have a hand-written VJP (kernel gradient from the padded input)."""
  rng = np.random.default_rng(0)
  pad = "VALID" if padding == "VALID" else ops.same_padding(ksize)
  direct = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), pad, dimension_numbers=_DN)  # noqa: E731
  ours = lambda x, k: ops.conv2d(x, k, 1, pad)  # noqa: E731
  with jax.enable_x64(True):
    x = jnp.asarray(rng.standard_normal((2, *size, 3)), jnp.float64)
    k = jnp.asarray(rng.standard_normal((*ksize, 3, 4)), jnp.float64)
    np.testing.assert_allclose(jax.jit(ours)(x, k), direct(x, k), rtol=1e-12, atol=1e-12)
    for a, b in zip(jax.jit(lambda x, k: _grads(ours, x, k))(x, k), _grads(direct, x, k)):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size,pad", [((5, 7), ((1, 1), (1, 1))), ((1, 3), ((1, 1), (2, 0))),
                                      ((3, 2), ((4, 5), (3, 1))), ((9, 4), ((0, 0), (2, 2))),
                                      ((2, 2), ((1, 0), (0, 1)))])
def test_reflect_pad_values_and_gradient(size, pad):
  """The gather form and its hand-written gradient against the definition (float64)."""
  h, w = size
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, h, w, 3)))
    ih, iw = ops.reflect_indices(h, *pad[0]), ops.reflect_indices(w, *pad[1])
    plain = lambda x: x[:, ih][:, :, iw]  # noqa: E731  (autodiff: a scatter-add)
    np.testing.assert_array_equal(ops.reflect_pad(x, pad), plain(x))
    if min(h, w) > max(max(pad)):
      want = jnp.pad(x, ((0, 0), *pad, (0, 0)), mode="reflect")
      np.testing.assert_array_equal(ops.reflect_pad(x, pad), want)
    np.testing.assert_allclose(jax.jit(lambda x: _grads(lambda x: ops.reflect_pad(x, pad), x))(x)[0],
                               _grads(plain, x)[0], rtol=1e-12, atol=1e-12)
  with pytest.raises(ValueError, match="non-negative"):
    ops.reflect_pad(x, ((-1, 0), (0, 0)))


def test_reflect_indices():
  np.testing.assert_array_equal(ops.reflect_indices(3, 1, 1), [1, 0, 1, 2, 1])
  np.testing.assert_array_equal(ops.reflect_indices(3, 4, 0), [0, 1, 2, 1, 0, 1, 2])
  np.testing.assert_array_equal(ops.reflect_indices(1, 2, 1), [0, 0, 0, 0])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("lib", [ops, kernels], ids=["ops", "kernels"])
def test_sort_pool_pairs_equals_sorting_each_pair(lib, dtype):
  # The paper's SortPool, against jnp.sort of each adjacent pair (values and
  # autodiff of the sort); float32 runs the CPU kernel, float64 XLA.
  with jax.enable_x64(dtype == jnp.float64):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((2, 5, 3, 10)) * 1e3 - 7e2, dtype)
    ref = lambda x: jnp.sort(x.reshape(x.shape[:-1] + (-1, 2)), axis=-1).reshape(x.shape)  # noqa: E731
    got = lib.sort_pool(x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, ref(x))
    g = jnp.asarray(rng.standard_normal(x.shape), dtype)
    np.testing.assert_array_equal(jax.vjp(lib.sort_pool, x)[1](g)[0], jax.vjp(ref, x)[1](g)[0])
    # On ties the gradient goes to one input each (min <- first, max <- second).
    tie = jnp.ones((1, 4), dtype)
    w = jnp.asarray([1.0, 2.0, 3.0, 4.0], dtype)
    np.testing.assert_array_equal(jax.grad(lambda t: jnp.sum(lib.sort_pool(t) * w))(tie), [w])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("lib", [ops, kernels], ids=["ops", "kernels"])
def test_scale_add_gradient_equals_autodiff(lib, dtype):
  with jax.enable_x64(dtype == jnp.float64):
    rng = np.random.default_rng(5)
    x, y, g = (jnp.asarray(rng.normal(size=(2, 5, 3, 4)), dtype) for _ in range(3))
    alpha = jnp.asarray(0.3, dtype)
    loss = lambda f: lambda x, y, a: jnp.sum(f(x, y, a) * g)  # noqa: E731
    got = jax.grad(loss(lib.scale_add), argnums=(0, 1, 2))(x, y, alpha)
    want = jax.grad(loss(lambda x, y, a: a * x + y), argnums=(0, 1, 2))(x, y, alpha)
    for a, b in zip(got, want):
      assert a.dtype == dtype
      np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == jnp.float32 else 1e-12)
  with pytest.raises(ValueError, match="scalar alpha"):
    lib.scale_add(x, y, jnp.ones(3))
