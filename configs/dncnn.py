"""Thin alias for a checkout: the config lives in the package (nedenoise_jax/configs/dncnn.py)."""

from nedenoise_jax.configs.dncnn import get_config  # noqa: F401
