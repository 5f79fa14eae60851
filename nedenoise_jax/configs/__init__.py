"""Training configurations shipped with the package: ``nedenoise train --config NAME``.

Each module defines ``get_config(arg=None)`` returning a locked
``ml_collections.ConfigDict`` (:mod:`nedenoise_jax.training.config`).
"""

import os

NAMES = tuple(sorted(f[:-3] for f in os.listdir(os.path.dirname(__file__))
                     if f.endswith(".py") and not f.startswith("_")))


def path(name: str) -> str:
  """The file of the shipped config ``name``; the error lists the names there are."""
  if name not in NAMES:
    raise ValueError(f"no shipped config {name!r}; shipped: {', '.join(NAMES)} (or give a path to a .py file)")
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
