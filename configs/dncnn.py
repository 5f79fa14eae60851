"""dncnn at the paper's scale: 70x70 patches, batch 128, Adam 1e-4, 900k steps, MSE, sigma in [0, 50].

python train.py --config configs/dncnn.py:norm_equiv,blind --workdir runs/dncnn_ne
"""

from nedenoise_jax.config import base_config, finalize


def get_config(arg=None):
  return finalize(base_config("dncnn"), arg)
