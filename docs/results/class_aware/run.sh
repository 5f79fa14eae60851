#!/bin/bash
# Class-aware denoising (Remez et al. 2017): the shipped NE FDnCNN (12 x 64, sigma = 25)
# fine-tuned on rendered documents (builtin:text), compared with the generic model on
# held-out documents (builtin:text-val) and on natural images (Set12, BSD68).
set -euo pipefail
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/class_aware}
OUT=${OUT:-docs/results/class_aware}
nice -n 10 nedenoise train --config quickstart --workdir "$RUNS/text_ft" \
  --config.model.features=64 --config.model.depth=12 --config.train.init_from=pretrained:gray-norm_equiv \
  --config.data.train=builtin:text --config.data.val=builtin:text-val --config.noise.sigma_min=25 \
  --config.noise.sigma_max=25 --config.noise.val_sigmas="(25.0,)" --config.train.steps=800 \
  --config.train.learning_rate=1e-4 --config.checkpoint.every_steps=200
nedenoise evaluate --model generic=pretrained:gray-norm_equiv --model text_finetuned=$RUNS/text_ft \
  --data builtin:text-val --data folder:$DATA/test/set12 --data folder:$DATA/test/bsd68 \
  --sigmas 15,25,50 --out "$OUT" --no_progress
