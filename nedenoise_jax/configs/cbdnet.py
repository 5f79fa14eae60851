"""Blind CBDNet at full size: a 5 x 32 noise estimator and the paper's U-Net (64/128/256
channels, 2, 3, 6 convolutions down and 3, 2 up), trained end to end on the in-camera noise pipeline with the asymmetric map loss.

nedenoise train --config cbdnet:norm_equiv,color,root=PATH/TO/data --workdir runs/cbdnet_ne

``noise.kind=camera``: Poisson-Gaussian noise on linear intensities, a gamma
response, Bayer mosaic and demosaicking for colour, and JPEG at quality 90
(nedenoise_jax.noise; ``--config.noise.kind=poisson_gaussian`` drops the
camera steps). Loss: MSE + 0.5 * asymmetric(map, alpha=0.3) + 0.05 * TV(map)
(Guo et al. 2019).
"""

from nedenoise_jax.training.config import base_config, finalize


def get_config(arg=None):
  c = base_config("cbdnet")
  c.noise.kind = "camera"
  c.noise.a_max = 0.02
  c.noise.b_max = 0.005
  c.noise.demosaic = True
  c.noise.jpeg_quality = 90
  c.train.patch_size = 128
  c.train.batch_size = 32
  return finalize(c, arg)
