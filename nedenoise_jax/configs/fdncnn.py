"""fdncnn at the paper's scale: 70x70 patches, batch 128, Adam 1e-4, 900k steps, MSE, sigma in [0, 50].

nedenoise train --config fdncnn:norm_equiv,blind,root=PATH/TO/data --workdir runs/fdncnn_ne

(``root``: the folder holding train/bsd400 and test/set12; colour: train/cbsd432, test/cbsd68.)
"""

from nedenoise_jax.training.config import base_config, finalize


def get_config(arg=None):
  return finalize(base_config("fdncnn"), arg)
