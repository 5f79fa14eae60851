"""nedenoise-jax: normalization-equivariant image denoisers in JAX/Flax."""

import warnings as _warnings

# `python -m nedenoise_jax.denoise` runs, as __main__, a module this package has
# already imported for the `denoise` function; runpy warns about that on every
# run although it is harmless here (the CLI only reads its own functions).
_warnings.filterwarnings("ignore", message="'nedenoise_jax.denoise' found in sys.modules",
                         category=RuntimeWarning)

from nedenoise_jax import equivariance, layers, models, ops, xla_options
from nedenoise_jax.denoise import denoise, estimate_sigma
from nedenoise_jax.weights import load, pretrained_names, save_weights

__version__ = "0.1.0"
__all__ = ["denoise", "equivariance", "estimate_sigma", "layers", "load", "models", "ops", "pretrained_names", "save_weights", "xla_options", "__version__"]
