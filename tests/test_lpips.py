"""LPIPS in plain torch: loading (torchvision / lpips key layouts, .pth and .safetensors), an
independent functional reference, metric properties, clear errors, and a short fit with LPIPS on."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from talksplat.fitting.config import FitConfig, LossConfig
from talksplat.fitting.strategy import BindingStrategyConfig
from talksplat.fitting.lpips import LPIPSWeightsError, load_lpips

# torchvision's `features` layouts, written out independently of fitting/lpips.py:
# (kind, index, out channels, kernel, stride, padding) for convs; ("M", index, kernel, stride) for pools.
ALEX = [("C", 0, 64, 11, 4, 2), ("M", 2, 3, 2), ("C", 3, 192, 5, 1, 2), ("M", 5, 3, 2), ("C", 6, 384, 3, 1, 1),
        ("C", 8, 256, 3, 1, 1), ("C", 10, 256, 3, 1, 1)]
ALEX_TAPS = (0, 3, 6, 8, 10)  # the conv whose ReLU is tapped


def _vgg_layout():
    layers, i = [], 0
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]:
        if v == "M":
            layers.append(("M", i, 2, 2))
            i += 1
        else:
            layers.append(("C", i, v, 3, 1, 1))
            i += 2  # conv, ReLU
    return layers


VGG = _vgg_layout()
VGG_TAPS = (2, 7, 14, 21, 28)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 are at +1
LAYOUT = {"alex": (ALEX, ALEX_TAPS), "vgg": (VGG, VGG_TAPS)}


def random_weights(net: str, seed: int = 0) -> tuple[dict, dict]:
    """(torchvision backbone state dict, lpips linear-head state dict) with random He-initialised weights."""
    g = torch.Generator().manual_seed(seed)
    layers, taps = LAYOUT[net]
    backbone, cin = {}, 3
    tap_channels = []
    for layer in layers:
        if layer[0] == "C":
            _, i, cout, k, _, _ = layer
            backbone[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2 / (cin * k * k))
            backbone[f"features.{i}.bias"] = 0.01 * torch.randn(cout, generator=g)
            if i in taps:
                tap_channels.append(cout)
            cin = cout
    # torchvision checkpoints also hold the classifier; the loader ignores it (tiny stand-ins here).
    backbone["classifier.1.weight"] = torch.zeros(4, 4)
    backbone["classifier.1.bias"] = torch.zeros(4)
    # lpips heads: non-negative 1x1 weights (the package clamps them to >= 0 in training).
    head = {f"lin{j}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) / c for j, c in enumerate(tap_channels)}
    return backbone, head


def reference_lpips(backbone: dict, head: dict, net: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """lpips.LPIPS(net, version='0.1')(x, y, normalize=True) with torch.nn.functional only, in float64.

    x, y: [B, H, W, 3] in [0, 1]; returns [B].
    """
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)
    layers, taps = LAYOUT[net]

    def feats(img):
        h = ((2 * img.double().permute(0, 3, 1, 2) - 1) - shift) / scale
        out = []
        for layer in layers:
            if layer[0] == "M":
                h = F.max_pool2d(h, layer[2], layer[3])
            else:
                _, i, _, _, s, p = layer
                h = F.relu(F.conv2d(h, backbone[f"features.{i}.weight"].double(),
                                    backbone[f"features.{i}.bias"].double(), stride=s, padding=p))
                if i in taps:
                    out.append(h)
            if len(out) == len(taps):
                break
        return out

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for j, (a, b) in enumerate(zip(feats(x), feats(y))):
        a = a / (torch.sqrt((a ** 2).sum(1, keepdim=True)) + 1e-10)
        b = b / (torch.sqrt((b ** 2).sum(1, keepdim=True)) + 1e-10)
        w = head[f"lin{j}.model.1.weight"].double().view(-1)
        total = total + torch.einsum("bchw,c->bhw", (a - b) ** 2, w).mean((1, 2))
    return total


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Per net: the raw state dicts, a directory as a user would have it, and one .safetensors."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("lpips")
    out = {}
    for net, (bb_name, head_name) in {"alex": ("alexnet-owt-7be5be79.pth", "alex.pth"),
                                      "vgg": ("vgg16-397923af.pth", "vgg.pth")}.items():
        backbone, head = random_weights(net, seed=1 if net == "alex" else 2)
        d = root / net
        d.mkdir()
        torch.save(backbone, d / bb_name)
        torch.save(head, d / head_name)
        single = root / f"{net}_lpips.safetensors"
        save_file({k: v.contiguous() for k, v in {**backbone, **head}.items()}, str(single))
        out[net] = {"backbone": backbone, "head": head, "dir": d, "file": single}
    return out


@pytest.fixture(scope="module")
def models(weights):
    return {net: load_lpips(w["dir"], net=net) for net, w in weights.items()}


def smooth_image(B: int = 1, H: int = 64, W: int = 64, seed: int = 0) -> torch.Tensor:
    """[B, H, W, 3] in [0, 1]: a few low-frequency waves and an edge, so noise and blur both change it."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    imgs = []
    for _ in range(B):
        f = 2 + 4 * torch.rand(3, 2, generator=g)
        ph = 6.28 * torch.rand(3, generator=g)
        chans = [0.5 + 0.35 * torch.sin(f[c, 0] * 6.28 * xx + ph[c]) * torch.cos(f[c, 1] * 6.28 * yy) for c in range(3)]
        img = torch.stack(chans, -1)
        img[:, W // 2:] = 0.8 * img[:, W // 2:] + 0.2
        imgs.append(img)
    return torch.stack(imgs).clamp(0, 1)


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=img.dtype)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    t = img.permute(0, 3, 1, 2)
    t = F.pad(t, (r, r, r, r), mode="replicate")
    t = F.conv2d(t, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    t = F.conv2d(t, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return t.permute(0, 2, 3, 1)


# ------------------------------------------------------------------------------- the metric
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_functional_reference(weights, models, net):
    w = weights[net]
    x = smooth_image(2, 64, 80, seed=3)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    ref = reference_lpips(w["backbone"], w["head"], net, x, y)
    got = models[net](x, y, reduction="none")
    assert got.shape == (2,) and got.dtype == torch.float32
    assert torch.allclose(got.double(), ref, rtol=1e-4, atol=1e-7), (got, ref)
    # The single .safetensors file and the lpips module's own state-dict layout load the same model.
    assert torch.equal(load_lpips(w["file"])(x, y, reduction="none"), got)
    assert load_lpips(w["file"]).net == net and load_lpips(w["dir"]).net == net  # net="auto"


def test_lpips_module_state_dict_layout(weights, models, tmp_path):
    """`lpips.LPIPS().state_dict()` keys: net.sliceK.N.*, scaling_layer.*, linK.* and lins.K.*."""
    w = weights["alex"]
    slices = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    sd = {"scaling_layer.shift": torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1),
          "scaling_layer.scale": torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)}
    for k, v in w["backbone"].items():
        if k.startswith("features."):
            i = int(k.split(".")[1])
            sd[f"net.slice{slices[i]}.{i}.{k.split('.')[2]}"] = v
    for k, v in w["head"].items():
        sd[k] = v
        sd[k.replace("lin", "lins.", 1)] = v
    torch.save(sd, tmp_path / "lpips_alex_full.pth")
    x, y = smooth_image(1, 48, 48, 5), smooth_image(1, 48, 48, 6)
    assert torch.equal(load_lpips(tmp_path / "lpips_alex_full.pth")(x, y), models["alex"](x, y))


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_metric_properties(models, net):
    m = models[net]
    g = torch.Generator().manual_seed(7)
    x = smooth_image(1, 64 if net == "alex" else 48, 64 if net == "alex" else 48, seed=1)  # VGG is 6x dearer
    assert float(m(x, x)) == 0.0
    noise = torch.randn(x.shape, generator=g)
    d_noise = [float(m(x, (x + s * noise).clamp(0, 1))) for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(d_noise, d_noise[1:])) and d_noise[0] > 0, d_noise
    d_blur = [float(m(x, gaussian_blur(x, s))) for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(d_blur, d_blur[1:])) and d_blur[0] > 0, d_blur
    y = (x + 0.1 * noise).clamp(0, 1)
    assert float(m(x, y)) == pytest.approx(float(m(y, x)), rel=1e-5)


def test_layouts_batches_and_gradients(models):
    m = models["alex"]
    x = smooth_image(3, 40, 56, seed=2)
    y = gaussian_blur(x, 1.5)
    per = m(x, y, reduction="none")
    single = torch.stack([m(x[i], y[i]) for i in range(3)])  # [H, W, 3] images
    assert torch.allclose(per, single, rtol=1e-5, atol=1e-8)
    assert float(m(x, y)) == pytest.approx(float(per.mean()), rel=1e-6)
    cf = m(x.permute(0, 3, 1, 2), y.permute(0, 3, 1, 2), channels_first=True, reduction="none")
    assert torch.allclose(cf, per, rtol=1e-6, atol=1e-9)
    # Gradients reach the image, never the frozen weights.
    r = y[0].clone().requires_grad_(True)
    m(r, x[0]).backward()
    assert r.grad is not None and torch.isfinite(r.grad).all() and r.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in m.parameters())
    m.train()
    assert not m.training
    with pytest.raises(ValueError, match="at least 32 px"):
        m(x[:, :20], y[:, :20])
    with pytest.raises(ValueError, match="shapes differ"):
        m(x, y[:2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda(weights, models):
    m = load_lpips(weights["alex"]["dir"], device="cuda")
    x, y = smooth_image(2, 64, 64, 1), smooth_image(2, 64, 64, 2)
    assert torch.allclose(m(x.cuda(), y.cuda()).cpu(), models["alex"](x, y), rtol=1e-3)


# ------------------------------------------------------------------------------- errors
def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg
    return msg


def test_clear_errors(weights, tmp_path):
    w = weights["alex"]
    from safetensors.torch import save_file

    # Nothing there: names the path and where to get the weights.
    with pytest.raises(LPIPSWeightsError) as e:
        load_lpips(tmp_path / "nowhere")
    msg = _one_line(e)
    assert "nowhere" in msg and "alexnet-owt-7be5be79.pth" in msg and "lpips/weights/v0.1/alex.pth" in msg
    # A directory with the backbone but not the head.
    d = tmp_path / "half"
    d.mkdir()
    torch.save(w["backbone"], d / "alexnet-owt-7be5be79.pth")
    with pytest.raises(LPIPSWeightsError) as e:
        load_lpips(d)
    msg = _one_line(e)
    assert str(d) in msg and "missing alex.pth" in msg
    # A missing key in a single file.
    bad = {**w["backbone"], **w["head"]}
    del bad["lin3.model.1.weight"]
    save_file(bad, str(tmp_path / "nolin3.safetensors"))
    with pytest.raises(LPIPSWeightsError) as e:
        load_lpips(tmp_path / "nolin3.safetensors")
    msg = _one_line(e)
    assert "nolin3.safetensors" in msg and "lin3.model.1.weight" in msg
    # A wrong shape (a head from another net; a backbone conv with the wrong width).
    d2 = tmp_path / "shape"
    d2.mkdir()
    torch.save(w["backbone"], d2 / "alexnet-owt-7be5be79.pth")
    torch.save(weights["vgg"]["head"], d2 / "alex.pth")
    with pytest.raises(LPIPSWeightsError) as e:
        load_lpips(d2)
    msg = _one_line(e)
    assert "lin1.model.1.weight" in msg and "(1, 128, 1, 1)" in msg and "(1, 192, 1, 1)" in msg
    wide = {**w["backbone"], **w["head"], "features.3.weight": torch.zeros(128, 64, 5, 5)}
    save_file(wide, str(tmp_path / "wide.safetensors"))
    with pytest.raises(LPIPSWeightsError, match=r"features\.3\.weight has shape \(128, 64, 5, 5\)"):
        load_lpips(tmp_path / "wide.safetensors", net="alex")
    # VGG weights asked for as AlexNet.
    with pytest.raises(LPIPSWeightsError, match="features.3.weight"):
        load_lpips(weights["vgg"]["file"], net="alex")
    # Not a checkpoint at all; a pickle with objects that weights_only refuses to build.
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LPIPSWeightsError) as e:
        load_lpips(tmp_path / "junk.pth")
    assert "junk.pth: unreadable" in _one_line(e)
    torch.save({"features.0.weight": torch.zeros(1), "obj": Path("x")}, tmp_path / "pickle.pth")
    with pytest.raises(LPIPSWeightsError) as e:
        load_lpips(tmp_path / "pickle.pth")
    assert "pickle.pth: unreadable" in _one_line(e)
    with pytest.raises(ValueError, match="unknown net"):
        load_lpips(w["dir"], net="squeeze")


# ------------------------------------------------------------------------------- in a fit
@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    from talksplat.benchmarks.synthetic_dataset import write_synthetic_dataset
    from talksplat.rigs import load_rig

    root = tmp_path_factory.mktemp("lpips_fit") / "ds"
    write_synthetic_dataset(root, load_rig("open"), T=5, size=48, cameras=(0.0,))
    return root


def test_fit_with_lpips(small_dataset, weights, tmp_path):
    from talksplat.fitting.trainer import Trainer, run_fit

    t0 = time.perf_counter()
    cfg = FitConfig(dataset=small_dataset, out=tmp_path / "fit", preset="fast", steps=4, sh_degree=0,
                    strategy=BindingStrategyConfig(refine_start_iter=1000), checkpoint_every=1000, quiet=True,
                    eval_frames=0,
                    lpips_weights=weights["alex"]["dir"])
    m = run_fit(cfg)
    held = json.loads((tmp_path / "fit" / "metrics.json").read_text())["heldout"]
    assert held["lpips"] == m["heldout"]["lpips"] and math.isfinite(held["lpips"]) and held["lpips"] > 0
    # The LPIPS term is part of the training loss (and reported) at image sizes it can see.
    tr = Trainer(FitConfig(dataset=small_dataset, out=tmp_path / "fit2", preset="fast", steps=1, sh_degree=0,
                           quiet=True, lpips_weights=weights["alex"]["file"], loss=LossConfig(lambda_lpips=0.5)))
    tr.train(progress=lambda *a: None, checkpoints=False)
    assert tr.last_parts["lpips"] > 0
    sample = tr.sampler.sample()
    bg = tr.background()
    render, _ = tr.render(sample, tr.frames.rig_params(torch.tensor([sample.timestep])), bg, 0)
    _, parts = tr.loss(render, sample.composite(bg), sample)
    parts["lpips"].backward()  # its gradient reaches the Gaussians
    assert tr.avatar.sh_dc.grad is not None and tr.avatar.sh_dc.grad.abs().sum() > 0
    print(f"fit with LPIPS: {time.perf_counter() - t0:.1f} s, held-out LPIPS {held['lpips']:.4f}")


def test_cli_bad_weights(small_dataset, tmp_path):
    missing = tmp_path / "no_weights_here"
    proc = subprocess.run([sys.executable, "-m", "talksplat.cli", "fit", str(small_dataset), "--out",
                           str(tmp_path / "o"), "--lpips-weights", str(missing), "--quiet"],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("talksplat: error")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    assert str(missing) in lines[0] and "nothing is downloaded" in lines[0]
    assert "Traceback" not in proc.stderr
