"""Noise models: :mod:`nedenoise_jax.noise` (kept here for the old import path)."""

from nedenoise_jax.noise import *  # noqa: F401,F403
from nedenoise_jax.noise import __all__  # noqa: F401
