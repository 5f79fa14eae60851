"""Thin alias for a checkout: the config lives in the package (nedenoise_jax/configs/fdncnn.py)."""

from nedenoise_jax.configs.fdncnn import get_config  # noqa: F401
