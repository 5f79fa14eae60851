"""Data: image sources (``folder:``, ``builtin:``, ``tfds:``), dead leaves, the grain training pipeline.

See :mod:`.sources` for the source strings and :mod:`.pipeline` for how
training batches are drawn (a pure function of the global sample index).
"""

from nedenoise_jax.data.errors import DataError
from nedenoise_jax.data.pipeline import BatchMaker, PatchSampler, train_batches
from nedenoise_jax.data.sources import BUILTIN, dead_leaves, list_folder, load_images
from nedenoise_jax.io.images import IMAGE_EXTENSIONS, read_float_image as read_image, to_channels

__all__ = ["BUILTIN", "BatchMaker", "DataError", "IMAGE_EXTENSIONS", "PatchSampler", "dead_leaves",
           "list_folder", "load_images", "read_image", "to_channels", "train_batches"]
