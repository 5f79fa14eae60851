"""nedenoise-jax: normalization-equivariant image denoisers in JAX/Flax."""

from nedenoise_jax import equivariance, layers, models, ops, xla_options
from nedenoise_jax.denoise import denoise, estimate_sigma
from nedenoise_jax.weights import load, pretrained_names, save_weights

__version__ = "0.1.0"
__all__ = ["denoise", "equivariance", "estimate_sigma", "layers", "load", "models", "ops", "pretrained_names", "save_weights", "xla_options", "__version__"]
