"""Training checkpoints: one orbax manager per run, and loading a model from a workdir or a step folder."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import jax
import ml_collections

from nedenoise_jax.io import weights
from nedenoise_jax.nn import models
from nedenoise_jax.training import state as state_lib
from nedenoise_jax.training.state import TrainState


def manager(workdir: str, config: ml_collections.ConfigDict):
  import orbax.checkpoint as ocp

  options = ocp.CheckpointManagerOptions(max_to_keep=config.checkpoint.keep, create=True,
                                         enable_async_checkpointing=config.checkpoint.async_save)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def save(mngr, step: int, state: TrainState, meta: dict) -> None:
  import orbax.checkpoint as ocp

  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)), force=True)


def restore_meta(mngr, step: int) -> dict:
  import orbax.checkpoint as ocp

  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore_state(mngr, step: int, abstract_state: TrainState) -> TrainState:
  import orbax.checkpoint as ocp

  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))
  return restored["state"]


def _checkpoint_location(path: str) -> tuple[str, Optional[int]]:
  """(checkpoints directory, step or None for the latest) for a workdir or a step folder."""
  if os.path.isdir(os.path.join(path, "state")) and os.path.isdir(os.path.join(path, "meta")):
    parent, name = os.path.split(os.path.normpath(path))
    if name.isdigit():
      return parent, int(name)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return os.path.join(path, "checkpoints"), None
  return path, None


def load_checkpoint(path: str | os.PathLike, *, expect: Optional[Mapping[str, Any]] = None):
  """``(module, variables)`` from a training workdir (latest step) or one step folder."""
  import orbax.checkpoint as ocp

  directory, step = _checkpoint_location(os.path.abspath(os.fspath(path)))
  mngr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise ValueError(f"{os.fspath(path)} holds no training checkpoint (looked in {directory})")
  meta = restore_meta(mngr, step)
  desc = meta["model"]
  weights.check_expect(desc, expect, f"{directory} step {step}")
  module = models.from_description(desc)
  # The saved state's structure follows its config (optimizer state included);
  # restore it onto this process's first device, whatever mesh wrote it.
  config = ml_collections.ConfigDict(meta["config"])
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  state = restore_state(
      mngr, step, state_lib.abstract_state(module, state_lib.create_optimizer(config), config, device))
  raw = {"params": state.params}
  if state.batch_stats:
    raw["batch_stats"] = state.batch_stats
  return module, weights.merge_strict(module, raw, source=f"checkpoint {directory} step {step}")
