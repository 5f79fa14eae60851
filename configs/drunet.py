"""Thin alias for a checkout: the config lives in the package (nedenoise_jax/configs/drunet.py)."""

from nedenoise_jax.configs.drunet import get_config  # noqa: F401
