"""nedenoise-jax: normalization-equivariant image denoisers in JAX/Flax.

``f(a*x + b) = a*f(x) + b`` for every ``a > 0`` and real ``b``, by construction.

The package, bottom to top (imports run one way):

* :mod:`.ops`: the maths as pure XLA functions (the reference); :mod:`.noise`:
  the noise models and classical noise estimators;
* :mod:`.kernels`: backends below the layers, one dispatch point per fused op;
* :mod:`.nn`: layers, models (``models.create``) and equivariance checks;
* :mod:`.io`: image files, weights files and the shipped models;
* :mod:`.data`: image sources and the training pipeline;
* :mod:`.evaluation`: metrics, noise, the evaluation loop;
* :mod:`.training`: config, state, checkpoints, the training loop;
* :func:`load`, :func:`denoise`, and the command lines (``nedenoise``, :mod:`.cli`).
"""

import warnings as _warnings

# `python -m nedenoise_jax.denoise` runs, as __main__, a module this package has
# already imported for the `denoise` function; runpy warns about that on every
# run although it is harmless here (the CLI only reads its own functions).
_warnings.filterwarnings("ignore", message="'nedenoise_jax.denoise' found in sys.modules",
                         category=RuntimeWarning)

from nedenoise_jax import noise, ops
from nedenoise_jax.kernels import xla_options
from nedenoise_jax.nn import equivariance, layers, models
from nedenoise_jax.evaluation import metrics
from nedenoise_jax.io.weights import pretrained_names, save_weights
from nedenoise_jax.loading import load
from nedenoise_jax.denoise import denoise, denoise_stack, estimate_noise_map, estimate_sigma

__version__ = "0.1.0"
__all__ = ["denoise", "denoise_stack", "equivariance", "estimate_noise_map", "estimate_sigma", "layers", "load", "metrics",
           "models", "noise", "ops",
           "pretrained_names", "save_weights", "xla_options", "__version__"]
