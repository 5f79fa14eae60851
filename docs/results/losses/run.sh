#!/bin/bash
# The loss experiment (Zhao et al. 2017) at a compact scale: the quickstart's NE FDnCNN
# (8 x 32, blind) trained on BSD400 with each loss, same seed, data, steps and schedule.
set -euo pipefail
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/losses}
OUT=${OUT:-docs/results/losses}
COMMON="--config.data.train=folder:$DATA/train/bsd400 --config.data.val= --config.noise.sigma_min=0
 --config.noise.sigma_max=55 --config.train.steps=1500 --config.checkpoint.every_steps=250"
for loss in mse l1 ms_ssim mix; do
  nice -n 10 nedenoise train --config quickstart --workdir "$RUNS/$loss" $COMMON --config.train.loss=$loss
done
nice -n 10 nedenoise train --config quickstart --workdir "$RUNS/mse_then_mix" $COMMON \
  --config.train.loss=mse --config.train.loss_switch_step=750 --config.train.loss_after=mix
nedenoise evaluate --model l2=$RUNS/mse --model l1=$RUNS/l1 --model ms_ssim=$RUNS/ms_ssim --model mix=$RUNS/mix \
  --model l2_then_mix=$RUNS/mse_then_mix --data folder:$DATA/test/set12 --data folder:$DATA/test/bsd68 \
  --sigmas 15,25,50 --out "$OUT" --no_progress
