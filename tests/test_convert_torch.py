"""convert_torch: reference-layout state_dicts -> same kernels and same outputs as a torch forward.

The torch forward below is this project's own functional restatement of the
reference networks' semantics (key names, layouts, roll-parametrized affine
kernels, reflect padding, sort pooling, affine residuals, DRUNet's mean
padding), used as the oracle.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import jax.numpy as jnp  # noqa: E402

from nedenoise_jax import convert_torch as ct  # noqa: E402
from nedenoise_jax import models  # noqa: E402
from nedenoise_jax.io import weights as weights_lib  # noqa: E402

NE = "norm-equiv"


# --------------------------------------------------------------------------- reference-layout state_dicts


def _fdncnn_sd(mode, blind, channels, nc=8, nb=4, seed=0):
  rng = np.random.default_rng(seed)
  sd, cin = {}, channels + (0 if blind else 1)
  for i in range(nb):
    cout = channels if i == nb - 1 else nc
    sd[f"fdncnn.{2 * i}.weight"] = rng.normal(size=(cout, cin, 3, 3)) / np.sqrt(9 * cin)
    if mode == "ordinary" and i < nb - 1:
      sd[f"fdncnn.{2 * i}.bias"] = 0.1 * rng.normal(size=cout)
    cin = cout
  return {k: torch.tensor(v, dtype=torch.float32) for k, v in sd.items()}


def _drunet_sd(mode, blind, channels, nc=(8, 8, 16, 16), nb=1, seed=0):
  rng = np.random.default_rng(seed)
  sd = {}
  bias = mode == "ordinary"

  def conv(key, cout, cin, k):
    sd[key + ".weight"] = rng.normal(size=(cout, cin, k, k)) / np.sqrt(k * k * cin)
    if bias:
      sd[key + ".bias"] = 0.1 * rng.normal(size=cout)

  def block(key, c):
    conv(key + ".m_res.0", c, c, 3)
    conv(key + ".m_res.2", c, c, 3)
    if mode == NE:
      sd[key + ".sum.alpha"] = 0.5 + 0.1 * rng.normal(size=1)

  conv("m_head", nc[0], channels + (0 if blind else 1), 3)
  for i in range(len(nc) - 1):
    for b in range(nb):
      block(f"m_down.{i}.{b}", nc[i])
    conv(f"m_down.{i}.{nb}", nc[i + 1], nc[i], 2)
  for b in range(nb):
    block(f"m_body.{b}", nc[-1])
  for k, i in enumerate(range(len(nc) - 1, 0, -1)):
    if mode == NE:
      sd[f"m_up.{k}.0.conv1x1.weight"] = rng.normal(size=(4 * nc[i - 1], nc[i], 1, 1)) / np.sqrt(nc[i])
    else:
      sd[f"m_up.{k}.0.weight"] = rng.normal(size=(nc[i], nc[i - 1], 2, 2)) / np.sqrt(nc[i])
      if bias:
        sd[f"m_up.{k}.0.bias"] = 0.1 * rng.normal(size=nc[i - 1])
    for b in range(nb):
      block(f"m_up.{k}.{b + 1}", nc[i - 1])
  conv("m_tail", channels, nc[0], 3)
  if mode == NE:
    for k in range(len(nc)):
      sd[f"res.{k}.alpha"] = 0.5 + 0.1 * rng.normal(size=1)
  return {k: torch.tensor(v, dtype=torch.float32) for k, v in sd.items()}


# --------------------------------------------------------------------------- the torch oracle


def _kernel(w, mode, free=0):
  if mode != NE:
    return w
  con = w[:, : w.shape[1] - free]
  flat = con.reshape(con.shape[0], -1)
  k = (flat.roll(1, 1) - flat + 1.0 / flat.shape[1]).reshape(con.shape)
  return torch.cat([k, w[:, w.shape[1] - free:]], 1)


def _conv(sd, key, x, mode, *, pad=1, stride=1, free=0):
  w = _kernel(sd[key + ".weight"], mode, free)
  if pad:
    x = F.pad(x, (pad,) * 4, mode="reflect" if mode == NE else "constant")
  return F.conv2d(x, w, sd.get(key + ".bias"), stride=stride)


def _act(x, mode):
  if mode != NE:
    return F.relu(x)
  n, c, h, w = x.shape
  p = x.view(n, c // 2, 2, h, w)
  return torch.stack([p.min(2).values, p.max(2).values], 2).view(n, c, h, w)


def _res(sd, key, x, y, mode):
  if mode != NE:
    return x + y
  a = sd[key + ".alpha"]
  return a * x + (1 - a) * y


def _block(sd, key, x, mode):
  y = _conv(sd, key + ".m_res.2", _act(_conv(sd, key + ".m_res.0", x, mode), mode), mode)
  return _res(sd, key + ".sum", x, y, mode)


def torch_fdncnn(sd, x, sigma, mode, blind):
  if not blind:
    x = torch.cat([x, sigma * torch.ones_like(x[:, :1])], 1)
  idx = sorted(int(k.split(".")[1]) for k in sd if k.endswith(".weight"))
  for n, i in enumerate(idx):
    x = _conv(sd, f"fdncnn.{i}", x, mode, free=0 if (n or blind) else 1)
    if n < len(idx) - 1:
      x = _act(x, mode)
  return x


def torch_drunet(sd, x, sigma, mode, blind, levels=3, nb=1):
  h, w = x.shape[2:]
  d = 2 ** levels
  x = F.pad(x, (0, (-w) % d, 0, (-h) % d), value=float(x.mean()))
  if not blind:
    x = torch.cat([x, sigma * torch.ones_like(x[:, :1])], 1)
  skips = [_conv(sd, "m_head", x, mode, free=0 if blind else 1)]
  for i in range(levels):
    y = skips[-1]
    for b in range(nb):
      y = _block(sd, f"m_down.{i}.{b}", y, mode)
    skips.append(_conv(sd, f"m_down.{i}.{nb}", y, mode, pad=0, stride=2))
  y = skips[-1]
  for b in range(nb):
    y = _block(sd, f"m_body.{b}", y, mode)
  for k in range(levels):
    y = _res(sd, f"res.{k}", y, skips[-1 - k], mode)
    if mode == NE:
      y = F.pixel_shuffle(_conv(sd, f"m_up.{k}.0.conv1x1", y, mode, pad=0), 2)
    else:
      y = F.conv_transpose2d(y, sd[f"m_up.{k}.0.weight"], sd.get(f"m_up.{k}.0.bias"), stride=2)
    for b in range(nb):
      y = _block(sd, f"m_up.{k}.{b + 1}", y, mode)
  y = _conv(sd, "m_tail", _res(sd, f"res.{levels}", y, skips[0], mode), mode)
  return y[..., :h, :w]


# --------------------------------------------------------------------------- tests


CASES = [(arch, mode, blind, channels) for arch in ("fdncnn", "drunet")
         for mode in ("ordinary", "scale-equiv", NE) for blind in (True, False)
         for channels in ((1, 3) if arch == "fdncnn" else (1,))]


@pytest.mark.parametrize("parametrization", ["centre", "roll"])
@pytest.mark.parametrize("arch, mode, blind, channels", CASES)
def test_same_kernels_and_outputs(arch, mode, blind, channels, parametrization):
  sd = (_fdncnn_sd if arch == "fdncnn" else _drunet_sd)(mode, blind, channels)
  sd64 = {k: v.double().numpy() for k, v in sd.items()}
  module, variables = ct.convert(sd64, arch, mode, parametrization=parametrization)
  desc = models.describe(module)
  assert (desc["blind"], desc["channels"], desc["parametrization"]) == (blind, channels, parametrization)
  # kernel by kernel
  kernels, _ = models.effective_kernels(module, variables)
  free_first = 0 if blind else 1
  if arch == "fdncnn":
    pairs = {f"conv_{n}": (f"fdncnn.{2 * n}", free_first if n == 0 else 0) for n in range(4)}
  else:
    pairs = {"head": ("m_head", free_first), "tail": ("m_tail", 0), "down_1_conv": ("m_down.1.1", 0),
             "body_block_0/conv2": ("m_body.0.m_res.2", 0), "up_2_block_0/conv1": ("m_up.0.1.m_res.0", 0)}
    if mode == NE:
      pairs["up_0_conv/conv"] = ("m_up.2.0.conv1x1", 0)
  for ours, (theirs, free) in pairs.items():
    want = _kernel(sd[theirs + ".weight"].double(), mode, free).numpy().transpose(2, 3, 1, 0)
    np.testing.assert_allclose(np.asarray(kernels[ours]), want, atol=2e-6, err_msg=ours)
  # whole network, on a size DRUNet must pad, one image
  rng = np.random.default_rng(1)
  x = rng.random((1, channels, 19, 21)).astype(np.float32)
  sigma = 0.1
  fwd = torch_fdncnn if arch == "fdncnn" else torch_drunet
  with torch.no_grad():
    want = fwd(sd, torch.tensor(x), sigma, mode, blind).numpy().transpose(0, 2, 3, 1)
  got = module.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)),
                     None if blind else jnp.full((1,), sigma, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


def test_cli_and_bad_keys(tmp_path, capsys):
  sd = _drunet_sd(NE, False, 1)
  pth = tmp_path / "drunet_ne.pth"
  torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, pth)
  out = tmp_path / "drunet.nedenoise"
  assert ct.main([str(pth), "--arch", "drunet", "--mode", NE, "--out", str(out)]) == 0
  module, _ = weights_lib.load_weights(out)
  assert models.describe(module)["mode"] == "norm_equiv" and not models.describe(module)["blind"]
  assert ct.main([str(pth), "--arch", "drunet", "--mode", NE, "--out", str(out)]) == 2  # exists
  assert "exists" in capsys.readouterr().err
  sd["extra.weight"] = torch.zeros(3)
  sd["m_body.0.m_res.0.bias"] = torch.zeros(16)
  torch.save(sd, pth)
  assert ct.main([str(pth), "--arch", "drunet", "--mode", NE, "--out", str(tmp_path / "x.nedenoise")]) == 2
  err = capsys.readouterr().err
  assert "2 unexpected key(s)" in err and "extra.weight" in err and "m_body.0.m_res.0.bias" in err
  assert ct.main([str(pth), "--arch", "fdncnn", "--mode", NE, "--out", str(tmp_path / "y.nedenoise")]) == 2
  assert "not an FDnCNN state_dict" in capsys.readouterr().err
  (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
  assert ct.main([str(tmp_path / "junk.pth"), "--arch", "fdncnn", "--mode", NE,
                  "--out", str(tmp_path / "z.nedenoise")]) == 2
  assert "junk.pth" in capsys.readouterr().err
