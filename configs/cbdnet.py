"""Thin alias for a checkout: the config lives in the package (nedenoise_jax/configs/cbdnet.py)."""

from nedenoise_jax.configs.cbdnet import get_config  # noqa: F401
