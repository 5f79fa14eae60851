"""The paper's generalization experiment at a compact scale: train at sigma=25 only.

nedenoise train --config generalization:MODE[,roll][,color],root=PATH/TO/data --workdir runs/gen_MODE

(``root``: the folder holding train/bsd400, test/set12, train/cbsd432, test/cbsd68.)

MODE is ordinary, scale_equiv, norm_equiv or wrapped. Every variant gets the same
seed, data stream, steps and optimizer, so only the architecture differs. The
model is a blind FDnCNN of 12 layers x 64 features (1/2 the depth of the paper's
20): deep enough that the ordinary model reaches DnCNN-like PSNR at sigma=25,
small enough that the four variants train together on one GPU in minutes.
Gray: BSD400 -> Set12/BSD68; ``color``: CBSD432 -> CBSD68/Kodak24.
"""

from nedenoise_jax.training.config import base_config, finalize


def get_config(arg=None):
  c = base_config("fdncnn")
  c.model.depth = 12
  c.model.features = 64
  c.model.blind = True
  c.noise.sigma_min = 25.0
  c.noise.sigma_max = 25.0
  c.noise.val_sigmas = (5.0, 25.0, 75.0)
  c.train.steps = 12_000
  c.train.batch_size = 64
  c.train.patch_size = 50
  c.train.learning_rate = 5e-4
  c.train.grad_clip = 1.0
  c.train.schedule = "cosine"
  c.train.warmup_steps = 500
  c.train.log_every = 100
  c.train.eval_every = 0
  c.checkpoint.every_steps = 1_000
  return finalize(c, arg)
