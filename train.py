"""Trains a denoiser: python train.py --config configs/NAME.py[:ARGS] --workdir DIR [--config.KEY=VALUE ...]

Running the same command again with the same workdir resumes from the latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from nedenoise_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the resolved config.")
flags.DEFINE_integer("stop_after", None, "Stop (with a checkpoint) after this many steps of this run.")
flags.DEFINE_integer(
    "cpu_devices", -1,
    "CPU only: split the host into this many JAX devices (-1: one when the convolutions run on "
    "oneDNN, else one per core reduced to a divisor of the batch size; 0: JAX's default). "
    "Ignored when XLA_FLAGS sets the count.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  train.configure_cpu_devices(FLAGS.cpu_devices, FLAGS.config.train.batch_size)
  summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, stop_after=FLAGS.stop_after)
  train.print_summary(summary)


if __name__ == "__main__":
  from nedenoise_jax import runtime
  runtime.configure_malloc()  # re-executes with malloc keeping freed memory (runtime.py)
  app.run(main)
