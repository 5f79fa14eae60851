"""Full-size models: one compilation per input shape, and a 1x256x256 forward on CPU."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nedenoise_jax import models


@pytest.mark.parametrize("arch", ("fdncnn", "drunet", "dncnn"))
def test_full_size_forward_compiles_once_per_shape(arch, random_variables):
  module = models.create(arch, mode="norm_equiv", blind=False)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 256, 256, 1)), jnp.float32)
  v = random_variables(module, x[:, :8, :8], 0.1)
  chex.clear_trace_counter()  # counts are per code location, shared across parametrizations

  @jax.jit
  @chex.assert_max_traces(n=2)
  def forward(v, x, sigma):
    return module.apply(v, x, sigma)

  for shape_x in (x, x[:, :37, :45]):
    for sigma in (0.1, 0.2):  # new values, same shapes: no retrace
      y = forward(v, shape_x, jnp.float32(sigma))
      assert y.shape == shape_x.shape and bool(jnp.all(jnp.isfinite(y)))
  with pytest.raises(AssertionError, match="retrac|trac"):
    forward(v, x[:, :9, :9], jnp.float32(0.1))
