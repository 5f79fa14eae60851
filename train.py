"""Trains a denoiser: python train.py --config configs/NAME.py[:ARGS] --workdir DIR [--config.KEY=VALUE ...]

The same as ``nedenoise train`` (:func:`nedenoise_jax.cli.train`), where
``--config`` may also name a config shipped in the package. Running the same
command again with the same workdir resumes from the latest checkpoint.
"""

import sys

if __name__ == "__main__":
  from nedenoise_jax import cli, runtime

  runtime.configure_malloc()  # re-executes with malloc keeping freed memory (runtime.py)
  cli.train(sys.argv)
