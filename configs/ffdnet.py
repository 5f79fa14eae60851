"""Thin alias for a checkout: the config lives in the package (nedenoise_jax/configs/ffdnet.py)."""

from nedenoise_jax.configs.ffdnet import get_config  # noqa: F401
