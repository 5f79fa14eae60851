"""FFDNet at full size, trained with spatially variant Gaussian noise maps (sigma in [0, 75]).

nedenoise train --config ffdnet:norm_equiv,root=PATH/TO/data --workdir runs/ffdnet_ne
nedenoise train --config ffdnet:norm_equiv,color,root=PATH/TO/data --workdir runs/ffdnet_ne_color

Gray: 15 layers of 64 channels; colour: 12 of 96 (Zhang et al. 2018).
Non-blind: the model is given the noise-level map (``noise.kind=gaussian_map``:
constant, gradient, low-frequency and piecewise-constant maps, see
nedenoise_jax.noise); ``--config.noise.kind=gaussian`` trains on uniform maps.
"""

from nedenoise_jax.training.config import base_config, finalize, parse_args


def get_config(arg=None):
  c = base_config("ffdnet")
  if parse_args(arg).get("channels") == 3:
    c.model.features, c.model.depth = 96, 12
  c.model.blind = False
  c.noise.kind = "gaussian_map"
  c.noise.sigma_max = 75.0
  c.train.patch_size = 100  # 50x50 at the network's half resolution
  return finalize(c, arg)
