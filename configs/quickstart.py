"""Thin alias for a checkout: the config lives in the package (nedenoise_jax/configs/quickstart.py)."""

from nedenoise_jax.configs.quickstart import get_config  # noqa: F401
