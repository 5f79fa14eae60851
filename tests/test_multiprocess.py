"""Two processes on localhost (jax.distributed, gloo CPU collectives), 2 devices each,
match one process with 4 devices after 20 steps."""

import os
import socket
import subprocess

import jax
import numpy as np

import nedenoise_jax
from nedenoise_jax import metrics

def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, train_command):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  port = _free_port()
  procs = [subprocess.Popen(train_command(tmp_path / "two", steps=20, batch_size=8, devices=2), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**env, "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                                 "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)})
           for i in range(2)]
  subprocess.run(train_command(tmp_path / "one", steps=20, batch_size=8, devices=4), check=True, env=env, capture_output=True)
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
  l1 = [r["train/loss"] for r in metrics.read_metrics(str(tmp_path / "one"))]
  l2 = [r["train/loss"] for r in metrics.read_metrics(str(tmp_path / "two"))]
  assert len(l1) == len(l2) == 20
  np.testing.assert_allclose(l2, l1, rtol=1e-5)
  _, v1 = nedenoise_jax.load(tmp_path / "one")
  _, v2 = nedenoise_jax.load(tmp_path / "two")
  for a, b in zip(jax.tree_util.tree_leaves(v1), jax.tree_util.tree_leaves(v2)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
