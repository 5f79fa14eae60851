"""``python -m nedenoise_jax.tfds_datasets NAME ...``: prepares the standard sets as TFDS datasets.

The command kept at its first name; the builders live in :mod:`nedenoise_jax.data.tfds`.
"""

import sys

from nedenoise_jax.data.tfds import STANDARD, main, prepare, read, register  # noqa: F401

if __name__ == "__main__":
  sys.exit(main())
