"""The training input pipeline (grain).

Training batches are a pure function of the global sample index: sample ``i``
picks its image, crop, flip/rotation and noise level from
``numpy.random.default_rng([seed, i])``; for the noise kinds other than
``gaussian`` the same generator then draws the noisy patch and its noise map
(:class:`nedenoise_jax.noise.NoiseModel`). Process ``p`` of ``P`` reads its
slice of every global batch. The data a run sees therefore does not depend on
the number of devices or processes, and resuming at step ``k`` is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

from nedenoise_jax import noise as noise_lib
from nedenoise_jax.data.errors import DataError


@dataclass
class PatchSampler:
  """Maps a global sample index to a training example (pure, deterministic)."""

  images: Sequence[np.ndarray]
  patch_size: int
  sigma_min: float  # image units ([0, 1] scale)
  sigma_max: float
  seed: int
  noise: Optional[noise_lib.NoiseModel] = None  # None or kind "gaussian": sigma only

  def __call__(self, index: int) -> dict:
    rng = np.random.default_rng([self.seed, index])
    img = self.images[rng.integers(len(self.images))]
    h, w = img.shape[:2]
    p = self.patch_size
    y, x = rng.integers(h - p + 1), rng.integers(w - p + 1)
    patch = img[y:y + p, x:x + p]
    k = rng.integers(8)  # the 8 flips/rotations
    patch = np.rot90(patch, k % 4)
    if k >= 4:
      patch = patch[:, ::-1]
    sigma = rng.uniform(self.sigma_min, self.sigma_max)
    out = {"clean": np.ascontiguousarray(patch, np.float32), "sigma": np.float32(sigma)}
    if self.noise is not None and self.noise.kind != "gaussian":
      out["noisy"], out["noise_map"] = self.noise.sample(out["clean"], rng)
    return out


@dataclass
class BatchMaker:
  """Global batch ``step`` -> this process's slice ``{"clean": (b, P, P, C), "sigma": (b,)}``,
  plus ``"noisy"`` ``(b, P, P, C)`` and ``"noise_map"`` ``(b, P, P, 1)`` for host-drawn noise."""

  sampler: PatchSampler
  global_batch: int
  process_index: int = 0
  process_count: int = 1

  def __call__(self, step: int) -> dict:
    local = self.global_batch // self.process_count
    first = step * self.global_batch + self.process_index * local
    examples = [self.sampler(first + j) for j in range(local)]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def train_batches(images: Sequence[np.ndarray], *, patch_size: int, sigma_min: float,
                  sigma_max: float, seed: int, global_batch: int, start_step: int, end_step: int,
                  process_index: int = 0, process_count: int = 1,
                  num_workers: int = 0,
                  noise: Optional[noise_lib.NoiseModel] = None) -> Iterator[dict]:
  """Iterates this process's batches for steps ``start_step .. end_step - 1`` (grain).

  ``num_workers > 0`` decodes batches in that many worker processes.
  ``noise``: a noise model drawn on the host (kinds other than ``gaussian``).
  """
  import grain

  if global_batch % process_count:
    raise DataError(f"global batch size {global_batch} is not divisible by the {process_count} "
                    "processes")
  maker = BatchMaker(PatchSampler(images, patch_size, sigma_min, sigma_max, seed, noise), global_batch,
                     process_index, process_count)
  ds = grain.MapDataset.range(start_step, end_step).map(maker).to_iter_dataset()
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(ds)
