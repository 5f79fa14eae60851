"""runtime.configure_malloc: re-executes once with the malloc tunables where they apply, never twice."""

import os
import subprocess
import sys

from nedenoise_jax import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = ("import os; from nedenoise_jax import runtime; "
         "print('start', os.environ.get('GLIBC_TUNABLES', ''), flush=True); "
         "runtime.configure_malloc(); print('active', runtime.active())")
OURS = ":".join(runtime.TUNABLES)


def _run(env_extra):
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", runtime.ENV)}
  env.update(env_extra)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                       timeout=120, check=True)
  return out.stdout.splitlines()


def _supported() -> bool:
  saved = {k: os.environ.pop(k) for k in ("GLIBC_TUNABLES", runtime.ENV) if k in os.environ}
  try:
    return runtime.wanted()
  finally:
    os.environ.update(saved)


def test_reexecutes_once_where_supported():
  lines = _run({})
  if _supported():
    # The first start prints and re-executes; the second sees the tunables and goes on.
    assert lines == ["start ", f"start {OURS}", "active True"]
  else:
    assert lines == ["start ", "active False"]


def test_opt_out_and_user_settings_are_respected():
  assert _run({runtime.ENV: "0"}) == ["start ", "active False"]
  # A malloc tunable of the user's own: nothing added, no re-execution.
  assert _run({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}) == [
      "start glibc.malloc.arena_max=4", "active False"]
  if _supported():  # other tunables are kept, ours appended
    lines = _run({"GLIBC_TUNABLES": "glibc.cpu.x86_ibt=on"})
    assert lines == ["start glibc.cpu.x86_ibt=on", f"start glibc.cpu.x86_ibt=on:{OURS}", "active True"]
