#!/bin/bash
# The compact trainings behind docs/results/noise/ (issue 21), in order, resumable:
# run again with the same RUNS folder to continue. DATA: the folder holding
# train/bsd400 and test/set12 (../shared/data in the project checkout).
set -euo pipefail
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/noise}
COMMON="--config.data.train=folder:$DATA/train/bsd400 --config.data.val=folder:$DATA/test/set12
 --config.data.val_max_images=4 --config.train.batch_size=16 --config.train.learning_rate=1e-3
 --config.train.schedule=cosine --config.train.eval_every=0 --config.train.log_every=50
 --config.checkpoint.every_steps=250"
train() { nice -n 10 nedenoise train --config "$@" $COMMON; }

# (a) spatially variant Gaussian noise: non-blind FFDNet (given the map) against a
# blind FDnCNN with about as many parameters (170k vs 167k), same noise, steps, seed.
MAPS="--config.noise.kind=gaussian_map --config.noise.sigma_max=75 --config.train.patch_size=64
 --config.train.steps=3000"
train ffdnet:norm_equiv --workdir "$RUNS/ffdnet_ne" --config.model.features=48 \
  --config.model.depth=10 $MAPS
train fdncnn:norm_equiv,blind --workdir "$RUNS/fdncnn_blind_ne" --config.model.features=48 \
  --config.model.depth=10 $MAPS

# (c) Poisson-Gaussian noise, blind CBDNet (estimator 16 x 3, FDnCNN 32 x 8 denoiser),
# NE against ordinary.
PG="--config.noise.kind=poisson_gaussian --config.noise.a_max=0.04 --config.noise.b_max=0.02
 --config.model.denoiser=fdncnn --config.model.features=(32,) --config.model.depth=8
 --config.model.estimator_features=16 --config.model.estimator_depth=3
 --config.train.patch_size=48 --config.train.steps=2500"
for mode in norm_equiv ordinary; do
  train cbdnet:$mode --workdir "$RUNS/cbdnet_$mode" $PG
done

# (d) the same noise and steps, blind CBDNet with the paper's U-Net as its denoiser (estimator
# 16 x 3; U-Net 32/64/128 with the paper's 2, 3, 6 convolutions down and 3, 2 up), NE against
# ordinary. Without the warm-up and the clipping the NE run diverged by step 100 (a chain of
# 16 plain convolutions at this rate; the FDnCNN-based CBDNet above did not need them).
UNET="--config.noise.kind=poisson_gaussian --config.noise.a_max=0.04 --config.noise.b_max=0.02
 --config.model.denoiser=unet --config.model.features=(32,64,128) --config.model.convs=(2,3,6)
 --config.model.estimator_features=16 --config.model.estimator_depth=3
 --config.train.patch_size=48 --config.train.steps=2500 --config.train.warmup_steps=100
 --config.train.grad_clip=1.0"
for mode in norm_equiv ordinary; do
  train cbdnet:$mode --workdir "$RUNS/cbdnet_unet_$mode" $UNET
done
