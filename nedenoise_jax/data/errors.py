"""The error every data source raises for input it cannot use."""

from nedenoise_jax.io.images import ImageError


class DataError(ImageError):
  """A data source that cannot be used (named in the message)."""
