"""The training state, its optimizer, and its shapes for restoring a checkpoint."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  key: jax.Array  # raw uint32 key data, for checkpoints


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  t = config.train
  if t.schedule == "constant":
    lr = optax.constant_schedule(t.learning_rate)
  elif t.schedule == "step":
    lr = optax.exponential_decay(t.learning_rate, t.schedule_steps, 0.5, staircase=True)
  elif t.schedule == "cosine":
    lr = optax.cosine_decay_schedule(t.learning_rate, max(1, t.steps - t.warmup_steps))
  else:
    raise ValueError(f"config.train.schedule={t.schedule!r}; expected constant, step or cosine")
  if t.warmup_steps:
    lr = optax.join_schedules([optax.linear_schedule(0.0, t.learning_rate, t.warmup_steps), lr],
                              [t.warmup_steps])
  if t.optimizer == "adam":
    opt = optax.adam(lr)
  elif t.optimizer == "adamw":
    opt = optax.adamw(lr, weight_decay=t.weight_decay)
  else:
    raise ValueError(f"config.train.optimizer={t.optimizer!r}; expected adam or adamw")
  if t.grad_clip:
    opt = optax.chain(optax.clip_by_global_norm(t.grad_clip), opt)
  return opt


def init_state(module: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
               config: ml_collections.ConfigDict) -> TrainState:
  c = config.model.channels
  x = jnp.zeros((1, config.train.patch_size, config.train.patch_size, c), jnp.float32)
  sigma = None if config.model.blind else jnp.zeros((1,), jnp.float32)
  init_key, noise_key = jax.random.split(key)
  variables = module.init(init_key, x, sigma)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    key=jax.random.key_data(noise_key))


def abstract_state(module: nn.Module, tx: optax.GradientTransformation,
                   config: ml_collections.ConfigDict, sharding) -> TrainState:
  """Shapes, dtypes and ``sharding`` of the state, to restore a checkpoint into."""
  shapes = jax.eval_shape(lambda: init_state(module, tx, jax.random.key(0), config))
  return jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), shapes)
