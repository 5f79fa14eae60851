"""Training: a pure ``train_step`` and ``train_and_evaluate(config, workdir)``.

Data parallelism is ``jax.jit`` over a ``("data",)`` mesh of every device of
every process: parameters and optimizer state replicated, the batch sharded
along its first axis, the state donated. Gaussian noise is drawn inside the
step from ``fold_in(key, step)``, so a step is a pure function of
``(state, clean batch)``.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nedenoise_jax import data, files, noise, ops
from nedenoise_jax.evaluation import evaluate as evaluation, metrics
from nedenoise_jax.kernels import build as kernel_build, xla_options
from nedenoise_jax.nn import models
from nedenoise_jax.training import checkpoints, losses
from nedenoise_jax.training import config as config_lib
from nedenoise_jax.training.state import TrainState, abstract_state, create_optimizer, init_state


class TrainingError(RuntimeError):
  """Training cannot go on (non-finite loss, wrong workdir, ...)."""


# --------------------------------------------------------------------------- building blocks


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  m = config.model
  kwargs = {k: m[k] for k in models.ARCH_KWARGS.get(m.arch, ())}
  try:
    return models.create(m.arch, mode=m.mode, blind=m.blind, channels=m.channels,
                         parametrization=m.parametrization, dtype=jnp.dtype(m.dtype), **kwargs)
  except ValueError as e:  # the message names the model's key; say where it came from
    raise ValueError(f"config.model: {e}") from None


def configure_cpu_devices(requested: int, batch_size: int) -> None:
  """Splits the CPU into several JAX devices, before any computation.

  ``requested``: a device count, 0 to leave JAX's default, or -1 to choose:
  one device when the convolutions go to oneDNN (:mod:`nedenoise_jax.kernels`), which
  spreads each one over every core (two devices of one core each were 1.5x
  slower for FDnCNN's training step on 2 cores); otherwise one device per
  core, each with its shard of the batch, since XLA's own CPU convolutions
  use the cores of one device poorly (about 1.3x faster for the quickstart on
  2 cores). Only the CPU platform is affected.
  """
  if requested == 0 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return
  if requested < 0 and kernel_build.will_use():
    n = 1
  else:
    n = requested if requested > 0 else max(
        d for d in range(1, (os.cpu_count() or 1) + 1) if batch_size % d == 0)
  jax.config.update("jax_num_cpu_devices", n)


def make_mesh(devices=None) -> Mesh:
  """A 1-D ``("data",)`` mesh over all devices of all processes."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), ("data",))


def check_batch(global_batch: int, mesh: Mesh) -> None:
  n_dev, n_proc = mesh.devices.size, jax.process_count()
  if global_batch % n_dev:
    raise ValueError(f"config.train.batch_size={global_batch} is not divisible by the {n_dev} "
                     f"devices ({n_proc} process(es)); use a multiple of {n_dev}, e.g. "
                     f"{max(n_dev, global_batch // n_dev * n_dev)}")


def train_step(state: TrainState, batch: dict, *, module: nn.Module,
               tx: optax.GradientTransformation, loss: str, blind: bool,
               map_loss: tuple[float, float, float] = (0.5, 0.3, 0.05), loss_alpha: float = 0.84):
  """One optimization step.

  ``batch``: ``{"clean": (B, P, P, C), "sigma": (B,)}`` (Gaussian noise drawn
  here, from ``fold_in(key, step)``), or with ``"noisy"`` and ``"noise_map"``
  ``(B, P, P, 1)`` drawn on the host (the other noise kinds). A model that
  estimates its noise map (blind CBDNet) adds ``asym_weight *``
  :func:`losses.asymmetric` ``+ tv_weight *`` :func:`losses.total_variation`
  of its estimate, ``map_loss = (asym_weight, asym_alpha, tv_weight)``.

  Returns ``(new_state, metrics)``. If the loss or a gradient is not finite,
  the state is returned unchanged and ``metrics["finite"]`` is False.
  """
  clean = batch["clean"]
  if "noisy" in batch:
    noisy, true_map = batch["noisy"], batch["noise_map"]
    sig = None if blind else true_map
  else:
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    sigma = batch["sigma"]
    noisy = noise.add_gaussian(key, clean, sigma)
    true_map = sigma[:, None, None, None]
    sig = None if blind else sigma
  has_bn = bool(state.batch_stats)
  estimates = models.estimates_noise(module)
  kw = {"return_map": True} if estimates else {}
  asym_weight, asym_alpha, tv_weight = map_loss

  def loss_fn(params):
    variables = {"params": params}
    if has_bn:
      variables["batch_stats"] = state.batch_stats
      out, new = module.apply(variables, noisy, sig, train=True, mutable=["batch_stats"], **kw)
      new_bs = new["batch_stats"]
    else:
      out, new_bs = module.apply(variables, noisy, sig, **kw), state.batch_stats
    aux = {}
    if estimates:
      out, est = out
      aux["map_asym"] = losses.asymmetric(est, jnp.broadcast_to(true_map, est.shape), asym_alpha)
      aux["map_tv"] = losses.total_variation(est)
    value = losses.reconstruction(loss, out, clean, alpha=loss_alpha)
    aux["rec"] = value
    if estimates:
      value = value + asym_weight * aux["map_asym"] + tv_weight * aux["map_tv"]
    return value, (new_bs, aux)

  (value, (new_bs, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # optax.tree.norm's per-leaf sum of squares, as dot products (see ops.inner).
  grad_norm = jnp.sqrt(sum(ops.inner(g, g) for g in jax.tree_util.tree_leaves(grads)))
  finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
  new = TrainState(step=state.step + 1, params=params, batch_stats=new_bs, opt_state=opt_state,
                   key=state.key)
  keep = lambda n, o: jnp.where(finite, n, o)  # noqa: E731
  new = jax.tree_util.tree_map(keep, new, state)
  out = {"loss": value, "grad_norm": grad_norm, "finite": finite}
  if estimates:
    out.update(aux)
  return new, out


# --------------------------------------------------------------------------- checkpoints


# --------------------------------------------------------------------------- the loop


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """Starts ``jax.distributed`` when asked, or when a multi-process launch is detected."""
  mode = config.distributed.initialize
  if mode == "never":
    return
  env = os.environ
  launched = any(k in env for k in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")) or (
      int(env.get("SLURM_NTASKS", "1")) > 1) or ("TPU_WORKER_HOSTNAMES" in env and "," in
                                                env.get("TPU_WORKER_HOSTNAMES", ""))
  if mode == "always" or (mode == "auto" and launched):
    if not jax.distributed.is_initialized():
      kwargs = {}
      if "JAX_COORDINATOR_ADDRESS" in env:
        kwargs = dict(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                      num_processes=int(env["JAX_NUM_PROCESSES"]),
                      process_id=int(env["JAX_PROCESS_ID"]))
      # CPU-only processes need a collectives implementation to talk to each other.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      jax.distributed.initialize(**kwargs)


def _model_meta(module: nn.Module, config: ml_collections.ConfigDict) -> dict:
  return {"model": models.describe(module), "config": json.loads(config.to_json())}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       progress: bool = True, stop_after: Optional[int] = None,
                       devices=None) -> dict:
  """Trains (or resumes) the model of ``config`` in ``workdir``; returns the final summary.

  ``stop_after``: stop (with a checkpoint) after this many steps of this call,
  for tests and time-sliced runs; the schedule still follows ``train.steps``.
  ``devices``: the devices of the mesh (default: all devices of all processes).
  """
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise config_lib.ConfigError(f"workdir {workdir} is a file, not a folder; give --workdir a folder "
                                 "(new or a run's)")
  try:  # every key checked before any work or any write
    config_lib.validate(config)
    noise_model = noise.from_config(config.noise)
    losses.check_config(config.train)
    module = create_model(config)  # an unknown arch, mode or dtype
    tx = create_optimizer(config)  # an unknown optimizer or schedule
  except config_lib.ConfigError:
    raise
  except (ValueError, TypeError) as e:
    raise config_lib.ConfigError(str(e)) from None
  maybe_initialize_distributed(config)
  is_main = jax.process_index() == 0
  mesh = make_mesh(devices)
  try:
    check_batch(config.train.batch_size, mesh)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))
  meta = _model_meta(module, config)

  # Fine-tuning (a new run only): the source is read and checked before anything is written.
  ckpt_dir = os.path.join(workdir, "checkpoints")
  fresh = not (os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir)))
  init_variables = (_load_init(config.train.init_from, module)
                    if config.train.init_from and fresh else None)
  if config.train.init_from and not fresh and is_main:
    print(f"resuming {workdir}: config.train.init_from={config.train.init_from!r} applies to new runs "
          "only and is not used", file=sys.stderr)
  mngr = checkpoints.manager(workdir, config)
  val_images = functools.lru_cache(maxsize=1)(lambda: _val_images(config) if config.data.val else [])
  latest = mngr.latest_step()
  if latest is not None:
    _check_resume(workdir, latest, checkpoints.restore_meta(mngr, latest), meta, config)

  key = jax.random.key(config.seed)
  init = xla_options.jit(functools.partial(init_state, module, tx, config=config),
                 out_shardings=replicated)
  if latest is None:
    state = init(key)
    if init_variables is not None:
      state = _init_from(config.train.init_from, init_variables, tx, state, replicated)
    start = 0
  else:
    try:
      state = checkpoints.restore_state(mngr, latest, abstract_state(module, tx, config, replicated))
    except Exception as e:  # a structure the checks above did not foresee: say where, not orbax's trace
      raise TrainingError(f"{workdir}: cannot restore checkpoint step {latest} for this config "
                          f"({type(e).__name__}: {str(e)[:500]}). Nothing was overwritten; resume with "
                          "the run's own config.json, or start a new --workdir.") from None
    start = int(latest)
  if is_main:  # the run is accepted: its resolved config replaces the last one
    os.makedirs(workdir, exist_ok=True)
    files.write_text(os.path.join(workdir, "config.json"), config.to_json(indent=2))

  @functools.lru_cache(maxsize=None)
  def step_for(loss_name: str):
    """The jitted step with reconstruction loss ``loss_name`` (one per loss of a switching run)."""
    return xla_options.jit(
        functools.partial(train_step, module=module, tx=tx, loss=loss_name,
                          blind=config.model.blind,
                          map_loss=(config.train.asym_weight, config.train.asym_alpha,
                                    config.train.tv_weight),
                          loss_alpha=config.train.loss_alpha),
        in_shardings=(replicated, batch_sharding), out_shardings=(replicated, replicated),
        donate_argnums=0)

  images, _ = data.load_images(config.data.train, config.model.channels,
                               min_size=config.train.patch_size)
  total = config.train.steps
  end = total if stop_after is None else min(total, start + stop_after)
  batches = data.train_batches(
      images, patch_size=config.train.patch_size, sigma_min=config.noise.sigma_min / 255.0,
      sigma_max=config.noise.sigma_max / 255.0, seed=config.seed,
      global_batch=config.train.batch_size, start_step=start, end_step=end,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_workers=config.data.num_workers, noise=noise_model)

  writer = metrics.MetricWriter(workdir, enabled=is_main, start_step=start)
  stop = {"signal": None}
  old_handler = signal.getsignal(signal.SIGTERM)

  def on_sigterm(signum, frame):  # preemption: finish the step, save, exit
    stop["signal"] = signum

  try:
    signal.signal(signal.SIGTERM, on_sigterm)
  except ValueError:  # not in the main thread
    old_handler = None

  bar = None
  if progress and is_main:
    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
  last_good = start
  t0, steps_timed = time.time(), 0
  summary: dict = {"workdir": workdir}
  try:
    step = start
    pending = []
    for local in batches:
      batch = {k: jax.make_array_from_process_local_data(batch_sharding, v)
               for k, v in local.items()}
      state, m = step_for(losses.loss_at(config.train, step))(state, batch)
      step += 1
      steps_timed += 1
      pending.append(m)
      boundary = (step % config.train.log_every == 0 or step == end
                  or step % config.checkpoint.every_steps == 0 or stop["signal"] is not None)
      if boundary:
        host = jax.device_get(pending)
        pending = []
        bad = [i for i, r in enumerate(host) if not bool(r["finite"])]
        if bad:
          first_bad = step - len(host) + bad[0] + 1
          raise TrainingError(
              f"non-finite loss or gradient at step {first_bad} (loss {float(host[bad[0]]['loss'])}); "
              f"training stopped. The last good checkpoint is step {last_good} in {workdir}. "
              "Lower train.learning_rate or set train.grad_clip.")
        loss = float(np.mean([float(r["loss"]) for r in host]))
        rate = steps_timed / max(1e-9, time.time() - t0)
        scalars = {"train/loss": loss, "train/grad_norm": float(host[-1]["grad_norm"]),
                   "train/steps_per_s": rate}
        for k in ("rec", "map_asym", "map_tv"):
          if k in host[-1]:
            scalars[f"train/{k}"] = float(np.mean([float(r[k]) for r in host]))
        writer.write(step, scalars)
        if bar is not None:
          bar.set_postfix(loss=f"{loss:.3g}", refresh=False)
          bar.update(step - bar.n)
      if step % config.checkpoint.every_steps == 0 or step == end or stop["signal"] is not None:
        checkpoints.save(mngr, step, state, meta)
        last_good = step
      if config.train.eval_every and step % config.train.eval_every == 0 and step != end:
        _validate(module, state, config, writer, step, val_images())
      if stop["signal"] is not None:
        mngr.wait_until_finished()
        print(f"stopped by signal {stop['signal']} at step {step}; checkpoint saved in {workdir}",
              file=sys.stderr)
        summary["stopped_at"] = step
        return summary
    if step == total:
      summary["val"] = _validate(module, state, config, writer, step, val_images())
    summary["step"] = step
  finally:
    mngr.wait_until_finished()
    writer.close()
    if bar is not None:
      bar.close()
    if old_handler is not None:
      signal.signal(signal.SIGTERM, old_handler)
  summary["checkpoint"] = os.path.join(workdir, "checkpoints", str(summary["step"]))
  return summary


def _check_resume(workdir: str, step: int, saved: dict, meta: dict,
                  config: ml_collections.ConfigDict) -> None:
  """Refuses to resume the checkpoint ``step`` of ``workdir`` (meta ``saved``) with another model
  or optimizer than the one that wrote it; nothing has been written yet."""
  if saved.get("model") != meta["model"]:
    raise config_lib.ConfigError(
        f"{workdir} holds a checkpoint (step {step}) of another model:\n  saved:  "
        f"{json.dumps(saved.get('model'))}\n  config: {json.dumps(meta['model'])}\n"
        "Use a new --workdir; nothing was overwritten.")
  diff = config_lib.optimizer_differences(saved.get("config", {}), config)
  if diff:
    raise config_lib.ConfigError(
        f"{workdir} holds a checkpoint (step {step}) trained with another optimizer:\n  "
        + "\n  ".join(diff) + "\nTo resume, run with the checkpoint's values (its config.json). To "
        "train on from these weights with the new optimizer, start a new --workdir with "
        f"--config.train.init_from={workdir}. Nothing was overwritten.")


def _load_init(spec: str, module: nn.Module):
  """The variables of the model ``spec`` names (``train.init_from``), whose architecture
  must be the config's."""
  from nedenoise_jax import loading  # the same loader as nedenoise_jax.load

  try:
    source, variables = loading.load(spec)
  except Exception as e:  # a missing, corrupt or foreign file: name the key and the cause
    raise ValueError(f"config.train.init_from={spec!r}: {type(e).__name__}: {e}") from None
  have, want = models.describe(source), models.describe(module)
  diff = [f"{k}: {have.get(k)!r} there, {want[k]!r} in config.model" for k in want
          if k not in ("dtype", "param_dtype") and have.get(k) != want[k]]
  if diff:
    raise ValueError(f"config.train.init_from={spec!r} is another architecture than the config's: "
                     + "; ".join(diff))
  return variables


def _init_from(spec: str, variables, tx, state: TrainState, sharding) -> TrainState:
  """``state`` with the parameters (and batch statistics) of ``variables`` and a fresh
  optimizer state."""
  params = variables["params"]
  shapes = lambda t: jax.tree_util.tree_map(lambda a: (tuple(a.shape)), t)  # noqa: E731
  if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(state.params) or (
      shapes(params) != shapes(state.params)):
    raise ValueError(f"config.train.init_from={spec!r}: its parameters do not have the names and "
                     "shapes of the config's model")
  cast = lambda new, old: jax.device_put(jnp.asarray(new, old.dtype), sharding)  # noqa: E731
  params = jax.tree_util.tree_map(cast, params, state.params)
  batch_stats = state.batch_stats
  if state.batch_stats:
    if "batch_stats" not in variables:
      raise ValueError(f"config.train.init_from={spec!r} has no batch statistics, which this "
                       "model (BatchNorm) needs")
    batch_stats = jax.tree_util.tree_map(cast, variables["batch_stats"], state.batch_stats)
  return state.replace(params=params, batch_stats=batch_stats,
                       opt_state=jax.jit(tx.init, out_shardings=sharding)(params))


def _val_images(config) -> list:
  """The validation images (read once per run: validation runs every ``eval_every`` steps)."""
  images, _ = data.load_images(config.data.val, config.model.channels)
  return images[:config.data.val_max_images] if config.data.val_max_images else images


def _validate(module, state, config, writer, step, images) -> dict:
  if not config.data.val:
    return {}
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  res = evaluation.mean_scores(module, variables, images, config.noise.val_sigmas, blind=config.model.blind,
                               seed=config.seed, noise_model=noise.from_config(config.noise))
  scalars = {}
  for s, r in res.items():
    scalars[f"val/psnr_sigma{s:g}"] = r["psnr"]
    scalars[f"val/ssim_sigma{s:g}"] = r["ssim"]
  writer.write(step, scalars)
  return res


def print_summary(summary: dict) -> None:
  """Where the checkpoint, metrics and validation results are."""
  if jax.process_index() != 0:
    return
  wd = summary["workdir"]
  lines = [f"workdir:    {wd}"]
  if "checkpoint" in summary:
    lines.append(f"checkpoint: {summary['checkpoint']}")
  lines.append(f"metrics:    {os.path.join(wd, 'metrics.jsonl')} (TensorBoard: {os.path.join(wd, 'tensorboard')})")
  for s, r in summary.get("val", {}).items():
    lines.append(f"sigma={s:g}: PSNR {r['psnr']:.2f} dB (noisy {r['psnr_noisy']:.2f} dB, "
                 f"{r['psnr'] - r['psnr_noisy']:+.2f} dB), SSIM {r['ssim']:.4f}")
  print("\n".join(lines))
