#!/bin/bash
# Evaluations behind docs/results/noise/ (after train.sh). Same DATA / RUNS as train.sh.
set -euo pipefail
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/noise}
OUT=${OUT:-docs/results/noise}
SETS="--data folder:$DATA/test/set12 --data folder:$DATA/test/bsd68"
# (a) spatially variant noise: FFDNet given the true map vs the blind FDnCNN.
nedenoise evaluate --model ffdnet=$RUNS/ffdnet_ne --model fdncnn_blind=$RUNS/fdncnn_blind_ne $SETS \
  --sigmas 15,25,50 --noise gaussian_map --out $OUT/maps --no_progress
# (b) the wrong-map sweep: FFDNet with uniform noise, its map scaled by each factor.
nedenoise evaluate --model ffdnet=$RUNS/ffdnet_ne $SETS --sigmas 15,25,50 \
  --map_scales 0.5,0.75,1,1.25,1.5,2 --out $OUT/wrong_map --no_progress
# (c) Poisson-Gaussian noise: NE vs ordinary blind CBDNet, with the estimate's correction sweep,
# then the same noisy images moved to a 16-bit range with an offset.
nedenoise evaluate --model cbdnet_ne=$RUNS/cbdnet_norm_equiv --model cbdnet_ordinary=$RUNS/cbdnet_ordinary \
  $SETS --sigmas 15,25,50 --noise poisson_gaussian --map_scales 0.5,1,1.5,2 --out $OUT/cbdnet --no_progress
python docs/results/noise/rescaled.py --model ne=$RUNS/cbdnet_norm_equiv --model ordinary=$RUNS/cbdnet_ordinary \
  --data folder:$DATA/test/set12 --sigmas 15,25,50 --out $OUT/rescaled
# (d) the same, with the paper's U-Net as CBDNet's denoiser.
nedenoise evaluate --model cbdnet_unet_ne=$RUNS/cbdnet_unet_norm_equiv --model cbdnet_unet_ordinary=$RUNS/cbdnet_unet_ordinary \
  $SETS --sigmas 15,25,50 --noise poisson_gaussian --map_scales 0.5,1,1.5,2 --out $OUT/cbdnet_unet --no_progress
python docs/results/noise/rescaled.py --model ne=$RUNS/cbdnet_unet_norm_equiv --model ordinary=$RUNS/cbdnet_unet_ordinary \
  --data folder:$DATA/test/set12 --sigmas 15,25,50 --out $OUT/rescaled_unet
