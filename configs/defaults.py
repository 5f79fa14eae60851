"""Thin alias for a checkout: the config lives in the package (nedenoise_jax/configs/defaults.py)."""

from nedenoise_jax.configs.defaults import get_config  # noqa: F401
