"""The shipped default denoisers: blind FDnCNN at full size, sigma uniform in [0, 75], a GPU budget of minutes.

nedenoise train --config defaults:norm_equiv,root=PATH/TO/data --workdir runs/default_gray_ne
nedenoise train --config defaults:ordinary,root=PATH/TO/data --workdir runs/default_gray_ord
nedenoise train --config defaults:norm_equiv,color,root=PATH/TO/data --workdir runs/default_color_ne

(``root``: the folder holding train/bsd400 and test/set12; colour: train/cbsd432 and
test/cbsd68.) ``scripts/train_defaults.py`` trains the four (gray and colour, NE and
ordinary) together on one GPU.

The recipe, and why:

- Model: blind FDnCNN of 20 layers x 64 features (the paper's and DnCNN's depth;
  receptive field 41 x 41), the mode from the argument (norm_equiv by default);
  the ordinary counterpart gets the same recipe, so the shipped comparison is fair.
- Noise: sigma drawn uniformly in [0, 75] per patch. It covers DnCNN-B's blind
  range [0, 55] and FFDNet's [0, 75], so that every level a user meets in an
  8-bit photograph (5 to 75) is in range, while sigma = 100 and beyond stay
  outside it: the test of the NE model's generalization.
- Data: BSD400 (gray) or CBSD432 (colour), 50 x 50 patches (DnCNN-B's size,
  beyond the receptive field) with the 8 flips/rotations, batch 128.
- Optimizer: Adam, 300 warm-up steps to 1e-3, cosine decay to 0 over
  ``train.steps``, gradients clipped at global norm 1. A budget of a few
  thousand steps (minutes on one GPU, four models sharing it) rewards a high
  peak rate, the warm-up and the clipping keep a 20-layer network without
  batch normalization stable at that rate, and the cosine decay ends on the
  small rates that the last tenths of a dB need. MSE loss (PSNR is what is
  reported).
- float32 compute (TF32 convolutions on a GPU, XLA's default): bfloat16 would
  be faster but rounds the 0-255 residual to about 1/256 of its size.
"""

from nedenoise_jax.training.config import base_config, finalize


def get_config(arg=None):
  c = base_config("fdncnn")
  c.model.depth = 20
  c.model.features = 64
  c.model.blind = True
  c.noise.sigma_min = 0.0
  c.noise.sigma_max = 75.0
  c.noise.val_sigmas = (15.0, 25.0, 50.0, 100.0)
  c.data.val_max_images = 12
  c.train.steps = 4_000
  c.train.batch_size = 128
  c.train.patch_size = 50
  c.train.optimizer = "adam"
  c.train.learning_rate = 1e-3
  c.train.schedule = "cosine"
  c.train.warmup_steps = 300
  c.train.grad_clip = 1.0
  c.train.log_every = 50
  c.train.eval_every = 0  # validation at the end only: the GPU minutes go to training
  c.checkpoint.every_steps = 250
  c.checkpoint.keep = 2
  return finalize(c, arg)
