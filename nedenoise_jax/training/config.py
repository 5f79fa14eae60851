"""The training configuration: every key declared here, with its meaning.

Config files (``nedenoise_jax/configs/``, also reachable as ``configs/`` in a
checkout) start from :func:`base_config` and change values;
the returned dict is locked, so a misspelt key (in a file or in
``--config.KEY=VALUE``) is an error rather than silently ignored.
"""

from __future__ import annotations

import json
import math

import ml_collections

import os

from nedenoise_jax.nn import models

# Where the standard sets lie under a data root (``:root=PATH``): train, validation, by channels.
STANDARD_SETS = {1: ("train/bsd400", "test/set12"), 3: ("train/cbsd432", "test/cbsd68")}


def base_config(arch: str = "fdncnn") -> ml_collections.ConfigDict:
  """Paper-scale defaults (Herbreteau et al.'s protocol) for ``arch``."""
  if arch not in models.ARCHS:
    raise ValueError(f"unknown arch {arch!r}; expected one of {tuple(models.ARCHS)}")
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.arch = arch
  c.model.mode = "norm_equiv"  # ordinary | scale_equiv | norm_equiv | wrapped
  c.model.blind = models.ARCHS[arch].blind  # True, but False for ffdnet
  c.model.channels = 1
  for key in models.ARCH_KWARGS[arch]:  # the full-size defaults of the model class
    c.model[key] = getattr(models.ARCHS[arch], key)
  c.model.parametrization = "centre"  # centre | roll
  c.model.dtype = "float32"  # compute dtype; bfloat16 on accelerators

  c.data = ml_collections.ConfigDict()
  # Built-in data, so that every config runs offline on a fresh machine; the
  # paper's sets come from a data root (``:root=PATH``, see finalize) or from
  # --config.data.train=folder:PATH.
  c.data.train = "builtin:deadleaves"
  c.data.val = "builtin:deadleaves-val"
  c.data.val_max_images = 12  # 0: all
  c.data.num_workers = 0  # grain worker processes (0: in the main process)

  c.noise = ml_collections.ConfigDict()
  # The noise model of training and validation (nedenoise_jax.noise).
  c.noise.kind = "gaussian"  # gaussian | gaussian_map | poisson_gaussian | camera
  c.noise.sigma_min = 0.0  # 0-255 scale, drawn uniformly per patch (gaussian, gaussian_map)
  c.noise.sigma_max = 50.0
  c.noise.patterns = "constant,gradient,lowfreq,piecewise"  # gaussian_map: map shapes drawn from
  c.noise.a_min = 0.0  # poisson_gaussian, camera: variance a*x + b on [0, 1] images
  c.noise.a_max = 0.02
  c.noise.b_min = 0.0
  c.noise.b_max = 0.01
  c.noise.gamma = 2.2  # camera: response x**(1/gamma)
  c.noise.demosaic = False  # camera: RGGB mosaic + bilinear demosaicking (colour)
  c.noise.jpeg_quality = 0  # camera: 0 off, else JPEG quality
  # Validation levels (0-255): the noise kind at each level (noise.NoiseModel.at_level).
  c.noise.val_sigmas = (15.0, 25.0, 50.0)

  c.train = ml_collections.ConfigDict()
  c.train.steps = 900_000
  c.train.batch_size = 128  # global, over all devices and processes
  c.train.patch_size = 70
  c.train.optimizer = "adam"  # adam | adamw
  c.train.learning_rate = 1e-4
  c.train.weight_decay = 0.0  # adamw only
  c.train.schedule = "constant"  # constant | step | cosine
  c.train.schedule_steps = 100_000  # step: halve the rate every this many steps
  c.train.warmup_steps = 0
  c.train.loss = "mse"  # mse | l1 | ssim | ms_ssim | mix (training.losses)
  c.train.loss_alpha = 0.84  # mix: alpha * (1 - MS-SSIM) + (1 - alpha) * Gaussian-weighted l1
  c.train.loss_switch_step = 0  # > 0: from this step on, train with loss_after
  c.train.loss_after = ""
  # CBDNet (blind): + asym_weight * asymmetric loss on the map + tv_weight * its total variation
  c.train.asym_weight = 0.5  # lambda_asymm (Guo et al. 2019)
  c.train.asym_alpha = 0.3  # weight of over-estimates; under-estimates get 1 - alpha
  c.train.tv_weight = 0.05  # lambda_TV
  c.train.grad_clip = 0.0  # global norm; 0: off
  # Fine-tune from a weights file, a workdir or pretrained:NAME (same architecture; the
  # optimizer state starts afresh). Used when the workdir has no checkpoint yet.
  c.train.init_from = ""
  c.train.log_every = 50
  c.train.eval_every = 10_000  # 0: only at the end

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 5_000
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True

  c.distributed = ml_collections.ConfigDict()
  c.distributed.initialize = "auto"  # auto (multi-host env detected) | always | never
  return c


def parse_args(arg: str | None) -> dict:
  """``"norm_equiv,blind"`` / ``"ordinary,nonblind,color,root=PATH"`` -> model overrides (and ``root``)."""
  out: dict = {}
  for token in filter(None, (arg or "").split(",")):
    if token.startswith("root="):
      out["root"] = token[len("root="):]
    elif token in models.MODES:
      out["mode"] = token
    elif token == "blind":
      out["blind"] = True
    elif token in ("nonblind", "non_blind"):
      out["blind"] = False
    elif token in ("color", "colour"):
      out["channels"] = 3
    elif token in ("gray", "grey"):
      out["channels"] = 1
    elif token in ("centre", "roll"):
      out["parametrization"] = token
    else:
      raise ValueError(f"unknown config argument {token!r}; expected a mode, blind, nonblind, "
                       "color, gray, centre, roll or root=PATH")
  return out


def finalize(c: ml_collections.ConfigDict, arg: str | None = None, *,
             standard_train: bool = True) -> ml_collections.ConfigDict:
  """Applies ``:ARGS`` overrides and locks the config (unknown keys become errors).

  ``root=PATH``: a folder holding the standard sets as ``train/bsd400``,
  ``test/set12`` (gray) and ``train/cbsd432``, ``test/cbsd68`` (colour):
  ``data.val`` becomes the test set of the model's channel count, and so does
  ``data.train`` unless ``standard_train`` is False (a config with its own
  training data, e.g. the quickstart's dead leaves).
  """
  args = parse_args(arg)
  root = args.pop("root", None)
  for key, value in args.items():
    c.model[key] = value
  if root:
    train, val = STANDARD_SETS[c.model.channels]
    if standard_train:
      c.data.train = "folder:" + os.path.join(os.path.expanduser(root), train)
    c.data.val = "folder:" + os.path.join(os.path.expanduser(root), val)
  c.lock()
  return c


class ConfigError(ValueError):
  """A config value, or the config against its workdir, cannot be used (the key is in the message)."""


# Keys that must be integers > 0, integers >= 0, and numbers >= 0 (finite).
_POSITIVE_INTS = ("train.steps", "train.batch_size", "train.patch_size", "train.log_every",
                  "checkpoint.every_steps", "checkpoint.keep", "model.channels")
_NON_NEGATIVE_INTS = ("train.eval_every", "train.warmup_steps",
                      "data.val_max_images", "data.num_workers")
_NON_NEGATIVE = ("train.weight_decay", "train.grad_clip", "train.asym_weight", "train.tv_weight")


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises :class:`ConfigError` naming the first key whose value cannot train: non-positive
  steps, batch or patch size and similar counts, a learning rate that is not a finite
  number > 0, unknown channels, ... (the loss and noise keys are checked by their modules)."""
  def value(key):
    section, name = key.split(".")
    return c[section][name]

  def integer(v):
    return isinstance(v, int) and not isinstance(v, bool)

  def finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

  for key in _POSITIVE_INTS:
    if not (integer(value(key)) and value(key) > 0):
      raise ConfigError(f"config.{key}={value(key)!r}: expected an integer > 0")
  for key in _NON_NEGATIVE_INTS:
    if not (integer(value(key)) and value(key) >= 0):
      raise ConfigError(f"config.{key}={value(key)!r}: expected an integer >= 0")
  for key in _NON_NEGATIVE:
    v = value(key)
    if not (finite(v) and v >= 0):
      raise ConfigError(f"config.{key}={v!r}: expected a finite number >= 0")
  lr = c.train.learning_rate
  if not (finite(lr) and lr > 0):
    raise ConfigError(f"config.train.learning_rate={lr!r}: expected a finite number > 0")
  if c.model.channels not in (1, 3):
    raise ConfigError(f"config.model.channels={c.model.channels!r}: expected 1 (gray) or 3 (colour)")
  if c.train.schedule == "step" and not (integer(c.train.schedule_steps) and c.train.schedule_steps > 0):
    raise ConfigError(f"config.train.schedule_steps={c.train.schedule_steps!r}: expected an integer > 0 "
                      "with schedule='step'")


# The keys that define the optimizer (and so the structure and meaning of its saved state): a
# resume must use the values of the run it continues.
OPTIMIZER_KEYS = ("train.optimizer", "train.learning_rate", "train.weight_decay", "train.schedule",
                  "train.schedule_steps", "train.warmup_steps", "train.grad_clip")


def optimizer_differences(saved: dict, c: ml_collections.ConfigDict) -> list[str]:
  """``"key: saved -> now"`` for each optimizer key of ``c`` that differs from the ``saved``
  config (a checkpoint's, as JSON), among those the optimizer uses (``weight_decay`` with
  adamw, ``schedule_steps`` with the step schedule); ``train.steps`` counts too with a cosine
  schedule, which decays over it. Values are compared as JSON gives them back."""
  t = c.train
  now = json.loads(c.to_json())
  ignored = set()
  if t.optimizer != "adamw" and saved.get("train", {}).get("optimizer") != "adamw":
    ignored.add("train.weight_decay")  # adam has none
  if t.schedule != "step" and saved.get("train", {}).get("schedule") != "step":
    ignored.add("train.schedule_steps")
  keys = [k for k in OPTIMIZER_KEYS if k not in ignored] + (["train.steps"] if t.schedule == "cosine" else [])
  out = []
  for key in keys:
    section, name = key.split(".")
    if name not in saved.get(section, {}):  # a key newer than the checkpoint: nothing to compare
      continue
    old, new = saved[section][name], now[section][name]
    if old != new:
      why = " (the cosine schedule decays over it)" if key == "train.steps" else ""
      out.append(f"config.{key}: {old!r} in the checkpoint, {new!r} now{why}")
  return out
