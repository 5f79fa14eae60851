"""nedenoise-jax: normalization-equivariant image denoisers in JAX/Flax."""

from nedenoise_jax import equivariance, layers, models, ops
from nedenoise_jax.weights import load, save_weights

__version__ = "0.1.0"
__all__ = ["equivariance", "layers", "load", "models", "ops", "save_weights", "__version__"]
