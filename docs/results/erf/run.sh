#!/bin/bash
# Effective receptive fields of the shipped gray models (trained at sigma = 25) and of the
# same architectures untrained, at sigma = 5, 25, 75, averaged over Set12's centre crops.
set -euo pipefail
DATA=${DATA:-../shared/data}
nedenoise analyze erf --model pretrained:gray-norm_equiv --model pretrained:gray-ordinary --untrained \
  --data folder:$DATA/test/set12 --sigmas 5,25,75 --out docs/results/erf
