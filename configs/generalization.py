"""Thin alias for a checkout: the config lives in the package (nedenoise_jax/configs/generalization.py)."""

from nedenoise_jax.configs.generalization import get_config  # noqa: F401
