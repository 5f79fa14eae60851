"""The package's architecture, checked: imports run one way, layers carry no backend switches, no paths outside."""

import ast
import os
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "nedenoise_jax"

# Bottom to top; a module may import its own layer and the layers below it only.
LAYERS = [
    {"ops", "files", "runtime", "noise"},
    {"kernels"},
    {"nn"},
    {"io"},
    {"data"},
    {"evaluation"},
    {"training", "loading"},  # training.init_from loads with loading.load
    {"denoise", "evaluate", "analyze", "convert_torch", "configs", "tfds_datasets"},
    {"cli", "__init__"},
]


def _modules() -> dict:
  found = {}
  for path in PKG.rglob("*.py"):
    rel = path.relative_to(PKG).with_suffix("")
    parts = ("nedenoise_jax",) + rel.parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    found[".".join(parts)] = path
  return found


def _imports(path: pathlib.Path, modules: dict, name: str) -> set:
  """Every nedenoise_jax module ``path`` imports, at any depth (function-level imports too)."""
  out = set()
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
      continue
    out |= {t for t in targets if t in modules and t != name}
  return out


def _graph() -> dict:
  modules = _modules()
  return {name: _imports(path, modules, name) for name, path in modules.items()}


def _layer(module: str) -> int:
  top = module.split(".")[1] if "." in module else "__init__"
  for i, names in enumerate(LAYERS):
    if top in names:
      return i
  raise AssertionError(f"{module} is in no layer of test_layout.LAYERS; add it where it belongs")


def test_import_graph_has_no_cycle():
  graph = _graph()
  state: dict = {}

  def visit(node, stack):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        cycle = stack[stack.index(nxt):] + [nxt]
        raise AssertionError("import cycle: " + " -> ".join(cycle))
      if nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])


def test_imports_run_one_way():
  bad = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
         for a, deps in _graph().items() for b in deps if _layer(b) > _layer(a)]
  assert not bad, "\n".join(bad)


def test_no_path_outside_the_package():
  hits = [f"{p.relative_to(PKG)}:{i + 1}" for p in PKG.rglob("*.py")
          for i, line in enumerate(p.read_text().splitlines()) if "../shared" in line or "..', 'shared'" in line
          or '"..", "..", "shared"' in line]
  assert not hits, hits


def test_layers_carry_no_backend_switches():
  """A fusion chosen for a backend lives in nedenoise_jax.kernels, not in a layer's attributes."""
  import dataclasses

  from nedenoise_jax.nn import layers

  for cls in (layers.Conv, layers.AffineConv):
    names = {f.name for f in dataclasses.fields(cls)}
    assert not names & {"in_halves", "out_halves", "sort_input", "forms_kernel_in_call"}, names
  text = (PKG / "nn" / "layers.py").read_text() + (PKG / "nn" / "models.py").read_text()
  assert "platform_dependent" not in text and "onednn" not in text


@pytest.mark.parametrize("name", ["quickstart", "fdncnn", "dncnn", "drunet", "generalization", "ffdnet",
                                  "cbdnet", "defaults"])
def test_shipped_configs_resolve_and_need_no_data_on_disk(name):
  from nedenoise_jax import cli, configs

  path, _, _ = cli.resolve_config(name).partition(":")
  assert os.path.isfile(path) and path.startswith(str(PKG))
  ns: dict = {}
  exec(compile(pathlib.Path(configs.path(name)).read_text(), path, "exec"), ns)
  c = ns["get_config"]()
  assert c.data.train.startswith("builtin:") and c.data.val.startswith("builtin:")
  c = ns["get_config"]("root=/data/x")
  assert c.data.val == "folder:/data/x/test/set12"


def test_every_shipped_config_has_its_checkout_alias():
  # `python train.py --config configs/X.py` works for every X that `nedenoise train --config X` takes.
  from nedenoise_jax import configs

  aliases = {p.stem for p in (PKG.parent / "configs").glob("*.py")}
  assert aliases == set(configs.NAMES), f"configs/ lacks {set(configs.NAMES) - aliases}"
  for name in configs.NAMES:
    assert f"from nedenoise_jax.configs.{name} import get_config" in (PKG.parent / "configs" / f"{name}.py").read_text()
