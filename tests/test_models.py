"""Model construction, input validation, shapes, sigma forms, padding, wrapper, BatchNorm, dtypes."""

import itertools
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nedenoise_jax import models

# The authors' code (REFERENCE.md): (blind, non-blind) per mode.
REFERENCE_COUNTS = {
    ("fdncnn", "ordinary"): (665_920, 666_496),
    ("fdncnn", "scale_equiv"): (664_704, 665_280),
    ("fdncnn", "norm_equiv"): (664_704, 665_280),
    ("drunet", "ordinary"): (32_650_753, 32_651_329),
    ("drunet", "scale_equiv"): (32_638_080, 32_638_656),
    ("drunet", "norm_equiv"): (32_638_112, 32_638_688),
}


@pytest.mark.parametrize("arch,mode", list(REFERENCE_COUNTS))
def test_full_size_parameter_counts_equal_reference(arch, mode):
  for blind, want in zip((True, False), REFERENCE_COUNTS[arch, mode]):
    module = models.create(arch, mode=mode, blind=blind)
    x = jnp.zeros((1, 8, 8, 1))
    shapes = jax.eval_shape(module.init, jax.random.key(0), x, None if blind else 0.1)
    assert models.count_params(shapes) == want


def test_full_size_defaults():
  assert models.create("fdncnn", mode="norm_equiv", blind=True).depth == 20
  assert models.create("fdncnn", mode="norm_equiv", blind=True).features == 64
  d = models.create("drunet", mode="norm_equiv", blind=True)
  assert tuple(d.features) == (64, 128, 256, 512) and d.blocks == 4
  assert models.create("dncnn", mode="norm_equiv", blind=True).depth == 17


def test_create_errors():
  with pytest.raises(ValueError, match="unknown arch 'unet'"):
    models.create("unet", mode="norm_equiv", blind=True)
  with pytest.raises(ValueError, match="unknown mode 'ne'"):
    models.create("fdncnn", mode="ne", blind=True)
  with pytest.raises(ValueError, match=r"unknown keyword\(s\) \['blocks'\]"):
    models.create("fdncnn", mode="norm_equiv", blind=True, blocks=3)
  with pytest.raises(ValueError, match="even feature counts"):
    models.create("drunet", mode="norm_equiv", blind=True, features=(8, 9, 16, 16))
  with pytest.raises(ValueError, match="parametrization"):
    models.create("fdncnn", mode="norm_equiv", blind=True, parametrization="shift")
  with pytest.raises(ValueError, match="channels"):
    models.create("fdncnn", mode="norm_equiv", blind=True, channels=0)
  # Odd widths are fine where nothing sorts pairs.
  models.create("fdncnn", mode="ordinary", blind=True, features=9)


@pytest.fixture(scope="module")
def fdn():
  module = models.create("fdncnn", mode="norm_equiv", blind=False, channels=3, features=8, depth=3)
  x = jnp.zeros((2, 5, 6, 3))
  return module, module.init(jax.random.key(0), x, 0.1)


@pytest.mark.parametrize("arch, kwargs, message", [
    ("fdncnn", dict(depth=0), "fdncnn depth=0: expected an integer >= 1"),
    ("fdncnn", dict(features=-4), "fdncnn features=-4: expected an integer >= 1"),
    ("dncnn", dict(depth=2.5), "dncnn depth=2.5: expected an integer >= 1"),
    ("ffdnet", dict(depth=True), "ffdnet depth=True: expected an integer >= 1"),
    ("drunet", dict(features=(8, 0, 16, 16)), r"drunet features=\(8, 0, 16, 16\): expected integers >= 1"),
    ("drunet", dict(blocks=-1), "drunet blocks=-1: expected an integer >= 0"),
    ("cbdnet", dict(estimator_depth=0), "cbdnet estimator_depth=0: expected an integer >= 1"),
])
def test_create_rejects_sizes_that_build_no_network(arch, kwargs, message):
  # depth=0 once built a one-layer net named conv_-1; every size key is checked before building.
  with pytest.raises(ValueError, match=message):
    models.create(arch, mode="ordinary", **kwargs)
  models.create("drunet", mode="ordinary", features=(8, 8), blocks=0)  # no residual blocks: allowed



def test_input_errors(fdn):
  module, v = fdn
  x = jnp.zeros((2, 5, 6, 3))
  with pytest.raises(ValueError, match=r"shape \(N, H, W, 3\), got shape \(5, 6, 3\)"):
    module.apply(v, x[0], 0.1)
  with pytest.raises(ValueError, match=r"built for 3 channel\(s\).*\(2, 5, 6, 1\)"):
    module.apply(v, x[..., :1], 0.1)
  with pytest.raises(ValueError, match="floating point"):
    module.apply(v, x.astype(jnp.int32), 0.1)
  with pytest.raises(ValueError, match="non-blind: pass sigma"):
    module.apply(v, x)
  with pytest.raises(ValueError, match=r"expected a scalar, \(2,\), \(2, 1, 1, 1\) or \(2, 5, 6, 1\)"):
    module.apply(v, x, jnp.ones((3,)))
  with pytest.raises(ValueError, match="N, H, W >= 1"):
    module.apply(v, jnp.zeros((2, 0, 6, 3)), 0.1)
  blind = models.create("fdncnn", mode="norm_equiv", blind=True, features=8, depth=3)
  vb = blind.init(jax.random.key(0), x[..., :1])
  with pytest.raises(ValueError, match="blind: call it with sigma=None"):
    blind.apply(vb, x[..., :1], 0.1)


def test_sigma_forms_agree(fdn):
  module, v = fdn
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 5, 6, 3)), jnp.float32)
  ref = module.apply(v, x, 0.1)
  for s in (jnp.float32(0.1), jnp.asarray([0.1, 0.1]), jnp.full((2, 1, 1, 1), 0.1),
            jnp.full((2, 5, 6, 1), 0.1)):
    np.testing.assert_allclose(module.apply(v, x, s), ref, atol=1e-6)
  # Per-image sigma: each image sees its own level.
  both = module.apply(v, x, jnp.asarray([0.1, 0.3]))
  np.testing.assert_allclose(both[1], module.apply(v, x[1:], 0.3)[0], atol=1e-6)


@pytest.mark.parametrize("arch,mode", list(itertools.product(
    ("fdncnn", "drunet", "dncnn"), ("ordinary", "norm_equiv", "wrapped"))))
def test_any_size_keeps_shape_and_dtype(arch, mode, tiny_kwargs, random_variables):
  module = models.create(arch, mode=mode, blind=True, **tiny_kwargs[arch])
  v = random_variables(module, jnp.zeros((1, 8, 8, 1)))
  fn = jax.jit(lambda x: module.apply(v, x))
  for h, w in ((1, 1), (1, 7), (13, 1), (9, 20), (17, 16)):
    y = fn(0.5 + jnp.arange(w, dtype=jnp.float32).reshape(1, 1, w, 1) / w + jnp.zeros((2, h, w, 1)))
    assert y.shape == (2, h, w, 1) and y.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("mode", ("ordinary", "norm_equiv"))
def test_drunet_images_of_a_batch_are_independent(mode, tiny_kwargs, random_variables):
  # Padding uses each image's own mean; the reference's batch mean would couple them.
  module = models.create("drunet", mode=mode, blind=True, **tiny_kwargs["drunet"])
  rng = np.random.default_rng(0)
  x = jnp.asarray(np.stack([rng.uniform(size=(11, 13, 1)), 5 + rng.uniform(size=(11, 13, 1))]),
                  jnp.float32)
  v = random_variables(module, x)
  both = module.apply(v, x)
  for i in range(2):
    np.testing.assert_allclose(both[i], module.apply(v, x[i:i + 1])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ("fdncnn", "drunet", "dncnn"))
@pytest.mark.parametrize("blind", (True, False))
def test_wrapped_constant_image_maps_to_itself(arch, blind, tiny_kwargs, random_variables):
  module = models.create(arch, mode="wrapped", blind=blind, **tiny_kwargs[arch])
  x = jnp.full((2, 9, 11, 1), 0.37, jnp.float32).at[1].set(-4.0)
  sigma = None if blind else 0.1
  v = random_variables(module, x, sigma)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    y = module.apply(v, x, sigma)
    np.testing.assert_array_equal(y, x)
    # Gradients stay finite too (a saturated training patch must not give NaN).
    g = jax.grad(lambda v, x: jnp.sum(module.apply(v, x, sigma) ** 2), argnums=(0, 1))(v, x)
  chex.assert_tree_all_finite(g)


def test_wrapped_is_normalize_backbone_denormalize(tiny_kwargs, random_variables):
  wrapped = models.create("fdncnn", mode="wrapped", blind=False, **tiny_kwargs["fdncnn"])
  inner = models.create("fdncnn", mode="ordinary", blind=False, **tiny_kwargs["fdncnn"])
  x = jnp.asarray(np.random.default_rng(0).uniform(3, 9, size=(2, 7, 9, 1)), jnp.float32)
  v = random_variables(wrapped, x, 0.5)
  mu = x.mean(axis=(1, 2, 3), keepdims=True)
  s = x.std(axis=(1, 2, 3), keepdims=True)
  want = s * inner.apply({"params": v["params"]["inner"]}, (x - mu) / s, 0.5 / s) + mu
  np.testing.assert_allclose(wrapped.apply(v, x, 0.5), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ("ordinary", "scale_equiv"))
def test_dncnn_batchnorm_train_and_eval(mode, tiny_kwargs):
  module = models.create("dncnn", mode=mode, blind=True, **tiny_kwargs["dncnn"])
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 10, 10, 1)), jnp.float32)
  v = module.init(jax.random.key(0), x)
  assert "batch_stats" in v
  y, state = module.apply(v, x, train=True, mutable=["batch_stats"])
  assert y.shape == x.shape
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), v["batch_stats"],
                                   state["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))
  # Eval mode needs nothing mutable and differs from batch statistics.
  assert not np.allclose(module.apply(v, x), y)


def test_dncnn_output_is_input_minus_noise(tiny_kwargs, random_variables):
  module = models.create("dncnn", mode="norm_equiv", blind=True, **tiny_kwargs["dncnn"])
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 9, 9, 1)), jnp.float32)
  v = random_variables(module, x)
  _, state = module.apply(v, x, mutable=["intermediates"])
  # The noise predictor's last kernel sums to zero: a constant image has zero predicted noise.
  c = jnp.full((1, 9, 9, 1), 3.0)
  np.testing.assert_allclose(module.apply(v, c), c, rtol=1e-5)


@pytest.mark.parametrize("arch", ("fdncnn", "drunet"))
def test_bfloat16_compute_float32_params(arch, tiny_kwargs):
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 16, 16, 1)), jnp.float32)
  ref = models.create(arch, mode="norm_equiv", blind=True, **tiny_kwargs[arch])
  bf = models.create(arch, mode="norm_equiv", blind=True, dtype=jnp.bfloat16, **tiny_kwargs[arch])
  v = bf.init(jax.random.key(0), x)
  assert {l.dtype for l in jax.tree_util.tree_leaves(v)} == {jnp.dtype(jnp.float32)}
  y, want = bf.apply(v, x), ref.apply(v, x)
  assert y.dtype == jnp.float32
  err = float(jnp.max(jnp.abs(y - want)) / jnp.max(jnp.abs(want)))
  assert 0 < err < 0.05, err  # bf16 compute: close, but not float32-exact


def test_describe_roundtrip():
  for m in (models.create("drunet", mode="wrapped", blind=False, channels=3, features=(8, 16),
                          blocks=2, parametrization="roll"),
            models.create("fdncnn", mode="norm_equiv", blind=True, dtype=jnp.bfloat16),
            models.create("dncnn", mode="scale_equiv", blind=True, depth=5)):
    assert models.from_description(models.describe(m)) == m


@pytest.mark.parametrize("mode", ("ordinary", "norm_equiv"))
def test_resblock_folded_residual_equals_plain_formula(mode):
  """NE ResBlock folds (1 - alpha) into conv2's kernel: same output and gradients as alpha*x + (1-alpha)*y."""
  from nedenoise_jax import layers, ops
  spec = layers.mode_spec(mode)
  x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 7, 5, 6)), jnp.float32)
  block = layers.ResBlock(6, spec)
  v = block.init(jax.random.key(0), x)
  v = jax.tree_util.tree_map(lambda p: p + 0.05, v)  # alpha away from 0.5, kernels perturbed

  def plain(v, x):
    p = v["params"]
    y = layers.conv(spec, 6).apply({"params": p["conv1"]}, x)
    y = layers.activation(spec, y)
    y = layers.conv(spec, 6).apply({"params": p["conv2"]}, y)
    if spec.affine_residual:
      return ops.affine_combination(x, y, p["residual"]["affine"]["alpha"])
    return x + y

  np.testing.assert_allclose(block.apply(v, x), plain(v, x), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda v, x: jnp.sum(jnp.sin(f(v, x)))  # noqa: E731
  got = jax.grad(loss(block.apply), argnums=(0, 1))(v, x)
  want = jax.grad(loss(plain), argnums=(0, 1))(v, x)
  chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch,kw", [("drunet", dict(features=(4, 8), blocks=1, blind=False)),
                                     ("dncnn", dict(features=6, depth=4, blind=True)),
                                     ("fdncnn", dict(features=6, depth=3, parametrization="roll",
                                                     blind=False))])
def test_prepare_inference_same_outputs_without_the_constraint_per_call(arch, kw):
  import flax.traverse_util

  from nedenoise_jax import layers
  module = models.create(arch, mode="norm_equiv", **kw)
  x = jnp.asarray(np.random.default_rng(9).normal(size=(2, 13, 11, 1)) * 40 - 7, jnp.float32)
  sigma = None if module.blind else jnp.asarray([0.3, 0.5], jnp.float32)
  v = module.init(jax.random.key(1), x, sigma)
  v = jax.tree_util.tree_map(lambda p: p + 0.03, v)  # stored anchors away from their constrained values
  prepared, pv = models.prepare_inference(module, v)
  assert prepared.parametrization == layers.PRECOMPUTED
  assert jax.tree_util.tree_structure(pv) == jax.tree_util.tree_structure(v)
  np.testing.assert_array_equal(jax.jit(prepared.apply)(pv, x, sigma), jax.jit(module.apply)(v, x, sigma))
  # The stored kernels are the constrained ones, and no constraint is formed per call.
  kernels, sums = models.effective_kernels(module, v)
  flat = flax.traverse_util.flatten_dict(pv["params"])
  for name in sums:
    np.testing.assert_array_equal(flat[tuple(name.split("/")) + ("kernel",)], kernels[name])
  # The constraint's ops are gone from the program (centre: the anchors' scatter).
  count = lambda m, v, op: jax.jit(m.apply).lower(v, x, sigma).as_text().count(op)  # noqa: E731
  assert count(prepared, pv, "stablehlo.") < count(module, v, "stablehlo.")
  assert count(prepared, pv, "stablehlo.scatter") == 0
  # Idempotent, and models without a constraint come back as they are.
  assert models.prepare_inference(prepared, pv)[1] is pv
  plain = models.create(arch, mode="ordinary", **kw)
  pvars = plain.init(jax.random.key(1), x, sigma)
  assert models.prepare_inference(plain, pvars) == (plain, pvars)
  wrapped = models.create(arch, mode="wrapped", **kw)
  wvars = wrapped.init(jax.random.key(1), x, sigma)
  assert models.prepare_inference(wrapped, wvars)[1] is wvars
