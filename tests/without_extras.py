"""The ``nedenoise`` command as a denoise-only install (``pip install .``) runs it: the train,
tfds and torch extras' packages cannot be imported. Used by tests/test_cli.py and
scripts/input_cases.py."""

import os
import subprocess
import sys

_SCRIPT = """
import importlib.abc, sys
from nedenoise_jax import cli
class NotInstalled(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in cli.EXTRAS and name.split(".")[0] != "absl":  # absl comes with chex
      raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NotInstalled())
sys.exit(cli.main(["nedenoise"] + sys.argv[1:]))
"""


def nedenoise(*args, cwd, env=None) -> subprocess.CompletedProcess:
  """``nedenoise ARGS`` in a fresh process, in ``cwd``, without the extras."""
  env = {**(os.environ if env is None else env), "NEDENOISE_MALLOC": "0"}
  return subprocess.run([sys.executable, "-c", _SCRIPT, *map(str, args)], cwd=cwd, capture_output=True,
                        text=True, env=env)
