"""A small NE FDnCNN trained on built-in dead-leaves images in minutes on a CPU.

nedenoise train --config quickstart --workdir runs/quickstart
python train.py --config configs/quickstart.py --workdir runs/quickstart   # from a checkout

Evaluated at sigma = 15, 25, 50 on built-in dead-leaves validation images, or
on Set12 with ``--config quickstart:root=PATH`` (PATH holding test/set12).
"""

from nedenoise_jax.training.config import base_config, finalize


def get_config(arg=None):
  c = base_config("fdncnn")
  c.model.features = 32
  c.model.depth = 8
  c.data.train = "builtin:deadleaves"
  c.data.val = "builtin:deadleaves-val"
  c.noise.sigma_min = 5.0
  c.noise.sigma_max = 50.0
  c.train.steps = 1300
  c.train.batch_size = 16
  c.train.patch_size = 40
  c.train.learning_rate = 1e-3
  c.train.schedule = "cosine"
  c.train.log_every = 25
  c.train.eval_every = 0
  c.checkpoint.every_steps = 250
  return finalize(c, arg, standard_train=False)
