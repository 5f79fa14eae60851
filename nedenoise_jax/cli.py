"""The ``nedenoise`` command: one entry point for every job of the package.

    nedenoise train --config NAME_OR_PATH[:ARGS] --workdir DIR [--config.KEY=VALUE ...]
    nedenoise denoise INPUT ... --out DIR [--model PATH_OR_NAME] [--sigma S]
    nedenoise evaluate --model SPEC ... --data SOURCE ... --out DIR
    nedenoise analyze filters|svd|dilemma|erf|all --model SPEC ... --out DIR
    nedenoise convert-torch CHECKPOINT.pth --arch ARCH --mode MODE [--blind] --out FILE
    nedenoise prepare-tfds NAME ... (--manual_dir DIR | --data_root DIR)

``NAME`` in ``train --config`` is a config shipped in the package
(:mod:`nedenoise_jax.configs`: quickstart, fdncnn, dncnn, drunet,
generalization, ffdnet, cbdnet); a path to a ``.py`` file works too. Each subcommand takes
the flags of its module (``nedenoise SUB --help``); ``python train.py`` and
``python -m nedenoise_jax.SUB`` are the same commands from a checkout.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Optional, Sequence

SUBCOMMANDS = ("train", "denoise", "evaluate", "analyze", "convert-torch", "prepare-tfds")
MODULES = {"denoise": "nedenoise_jax.denoise", "evaluate": "nedenoise_jax.evaluate", "analyze": "nedenoise_jax.analyze",
           "convert-torch": "nedenoise_jax.convert_torch", "prepare-tfds": "nedenoise_jax.data.tfds"}


def resolve_config(spec: str) -> str:
  """``quickstart:ARGS`` -> ``/…/nedenoise_jax/configs/quickstart.py:ARGS``; paths pass through."""
  path, sep, args = spec.partition(":")
  if path.endswith(".py") or os.sep in path or os.path.isfile(path):
    return spec
  from nedenoise_jax import configs

  return configs.path(path) + sep + args


def _define_train_flags():
  from absl import flags
  from ml_collections import config_flags

  if "workdir" in flags.FLAGS:
    return flags.FLAGS
  config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the resolved config.")
  flags.DEFINE_integer("stop_after", None, "Stop (with a checkpoint) after this many steps of this run.")
  flags.DEFINE_integer(
      "cpu_devices", -1,
      "CPU only: split the host into this many JAX devices (-1: one when the convolutions run on "
      "oneDNN, else one per core reduced to a divisor of the batch size; 0: JAX's default). "
      "Ignored when XLA_FLAGS sets the count.")
  flags.mark_flags_as_required(["config", "workdir"])
  return flags.FLAGS


def train(argv: Sequence[str]) -> None:
  """``argv[0]`` the program name, then the flags of ``train.py``; ``--config`` may name a shipped config.

  Once per process (absl flags and ml_collections' ``--config.KEY`` flags are
  process-wide); call :func:`nedenoise_jax.training.loop.train_and_evaluate`
  to train several configs in one process.
  """
  from absl import app, logging

  argv = list(argv)
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      argv[i] = "--config=" + resolve_config(a[len("--config="):])
    elif a == "--config" and i + 1 < len(argv):
      argv[i + 1] = resolve_config(argv[i + 1])
  FLAGS = _define_train_flags()

  def main(rest):
    if len(rest) > 1:
      raise app.UsageError(f"unexpected arguments: {rest[1:]}")
    from nedenoise_jax.training import config as config_lib, loop

    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
      if FLAGS.stop_after is not None and FLAGS.stop_after <= 0:
        raise config_lib.ConfigError(f"--stop_after {FLAGS.stop_after}: expected a number of steps > 0")
      loop.configure_cpu_devices(FLAGS.cpu_devices, FLAGS.config.train.batch_size)
      summary = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir, stop_after=FLAGS.stop_after)
    except config_lib.ConfigError as e:  # a usage error: exit status 2, no traceback
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except loop.TrainingError as e:  # the run stopped (non-finite loss, ...): status 1
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
    loop.print_summary(summary)

  # ml_collections reads --config.KEY=VALUE overrides from sys.argv, whatever argv app.run gets.
  saved, sys.argv = sys.argv, argv
  try:
    app.run(main, argv=argv)
  except SystemExit as e:  # app.run exits when main returns; a finished run returns to the caller
    if e.code not in (None, 0):
      raise
  finally:
    sys.argv = saved


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The ``nedenoise`` console command."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help"):
    print(__doc__)
    return 0 if len(argv) >= 2 else 2
  sub, rest = argv[1], argv[2:]
  if sub not in SUBCOMMANDS:
    print(f"error: unknown command {sub!r}; expected one of {', '.join(SUBCOMMANDS)}", file=sys.stderr)
    return 2
  from nedenoise_jax import runtime

  runtime.configure_malloc()  # re-executes with malloc keeping freed memory (runtime.py)
  try:
    return _run(sub, rest)
  except ModuleNotFoundError as e:
    extra = EXTRAS.get(e.name.split(".")[0] if e.name else "")
    if extra is None:
      raise
    print(f"error: `nedenoise {sub}` needs {e.name}, which this install lacks: "
          f"pip install 'nedenoise-jax[{extra}]'", file=sys.stderr)
    return 2


# The optional dependencies and the install extra that brings each (pyproject.toml).
EXTRAS = {"absl": "train", "ml_collections": "train", "optax": "train", "orbax": "train", "grain": "train",
          "tensorboardX": "train", "matplotlib": "train", "tensorflow_datasets": "tfds", "torch": "torch"}


def _run(sub: str, rest: list) -> int:
  if sub == "train":
    train(["nedenoise train"] + rest)
    return 0
  # importlib: `from nedenoise_jax import denoise` would give the denoise function.
  module = importlib.import_module(MODULES[sub])
  return int(module.main(rest) or 0)


if __name__ == "__main__":
  sys.exit(main())
