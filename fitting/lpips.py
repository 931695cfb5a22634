"""LPIPS (Zhang et al. 2018), the `lpips` package's v0.1 metric, in plain torch.

Same computation as ``lpips.LPIPS(net="alex" | "vgg", version="0.1")`` called with
``normalize=True``: images in [0, 1] -> [-1, 1] -> the ScalingLayer -> the torchvision backbone
(AlexNet ``features`` taps after each ReLU; VGG16 taps relu1_2, relu2_2, relu3_3, relu4_3,
relu5_3) -> unit-normalise every feature vector over channels -> squared difference -> the 1x1
linear heads ``lin0..lin4`` (no bias) -> spatial mean -> sum over the five layers.

Nothing is downloaded: :func:`load_lpips` reads weights the user already has, either

- a directory holding torchvision's backbone checkpoint (``alexnet-owt-7be5be79.pth`` or any
  ``alexnet*.pth``; ``vgg16-397923af.pth`` or any ``vgg16*.pth``; keys ``features.N.weight/bias``)
  and the lpips package's linear heads (``alex.pth`` / ``vgg.pth`` from ``lpips/weights/v0.1/``,
  keys ``lin0.model.1.weight``...), or
- one ``.safetensors`` / ``.pth`` file holding both key sets (the state dict of an
  ``lpips.LPIPS`` module, with ``net.sliceK.N.*`` backbone keys, is accepted too).

``.pth`` files are read with ``torch.load(weights_only=True)``: tensors only, never arbitrary pickles.

Images use the project layout: ``[H, W, 3]`` or ``[B, H, W, 3]`` float in [0, 1] (channel last,
as :func:`talksplat.fitting.losses.photometric_loss`); pass ``channels_first=True`` for
``[B, 3, H, W]``.  Both sides must be at least :attr:`LPIPS.min_side` (32) pixels.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talksplat.core.errors import InputError

__all__ = ["LPIPS", "LPIPSWeightsError", "load_lpips", "NETS", "lpips_state_dict_keys"]

#: net -> (conv layers as (index in torchvision's `features`, in, out, kernel, stride, padding),
#:         indices of max-pool layers, indices of the tapped ReLUs, channels per tap)
NETS = {
    "alex": (
        [(0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1), (8, 384, 256, 3, 1, 1),
         (10, 256, 256, 3, 1, 1)],
        {2: (3, 2), 5: (3, 2)},
        (1, 4, 7, 9, 11),
        (64, 192, 384, 256, 256),
    ),
    "vgg": (
        [(i, cin, cout, 3, 1, 1) for i, cin, cout in
         [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
          (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]],
        {4: (2, 2), 9: (2, 2), 16: (2, 2), 23: (2, 2)},
        (3, 8, 15, 22, 29),
        (64, 128, 256, 512, 512),
    ),
}
#: The files to get, per net: torchvision's ImageNet checkpoint and the lpips package's v0.1 heads.
SOURCES = {
    "alex": ("alexnet-owt-7be5be79.pth", "alex.pth",
             "torchvision's AlexNet IMAGENET1K_V1 checkpoint (https://download.pytorch.org/models/"
             "alexnet-owt-7be5be79.pth) and the lpips package's lpips/weights/v0.1/alex.pth "
             "(https://github.com/richzhang/PerceptualSimilarity)"),
    "vgg": ("vgg16-397923af.pth", "vgg.pth",
            "torchvision's VGG16 IMAGENET1K_V1 checkpoint (https://download.pytorch.org/models/"
            "vgg16-397923af.pth) and the lpips package's lpips/weights/v0.1/vgg.pth "
            "(https://github.com/richzhang/PerceptualSimilarity)"),
}
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # lpips.normalize_tensor's


class LPIPSWeightsError(InputError):
    """LPIPS weights missing or not what they should be (one line: the file and the problem)."""


def lpips_state_dict_keys(net: str) -> dict[str, tuple[int, ...]]:
    """Every key :func:`load_lpips` needs for `net`, with its shape (torchvision / lpips names)."""
    convs, _, _, chans = NETS[net]
    keys: dict[str, tuple[int, ...]] = {}
    for i, cin, cout, k, _, _ in convs:
        keys[f"features.{i}.weight"] = (cout, cin, k, k)
        keys[f"features.{i}.bias"] = (cout,)
    for j, c in enumerate(chans):
        keys[f"lin{j}.model.1.weight"] = (1, c, 1, 1)
    return keys


class LPIPS(nn.Module):
    """The LPIPS v0.1 distance with frozen weights, always in eval mode.

    Build it with :func:`load_lpips`; ``LPIPS(net)`` alone has zero weights.
    """

    min_side = 32  # AlexNet's stride-4 11x11 conv and two pools leave nothing below ~31 px

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"lpips: unknown net {net!r} (use 'alex' or 'vgg')")
        self.net = net
        convs, self._pools, self._taps, _ = NETS[net]
        self.features = nn.ModuleDict({str(i): nn.Conv2d(cin, cout, k, stride=s, padding=p)
                                       for i, cin, cout, k, s, p in convs})
        self._last = self._taps[-1]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in NETS[net][3])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
            p.zero_()
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def layers(self, x: Tensor) -> list[Tensor]:
        """The five tapped backbone activations of [B, 3, H, W] input already in the scaled space."""
        taps = []
        for i in range(self._last + 1):
            key = str(i)
            if key in self.features:
                x = self.features[key](x)
            elif i in self._pools:
                k, s = self._pools[i]
                x = F.max_pool2d(x, k, s)
            else:  # a ReLU
                x = F.relu(x)
                if i in self._taps:
                    taps.append(x)
        return taps

    def forward(self, x: Tensor, y: Tensor, channels_first: bool = False, reduction: str = "mean") -> Tensor:
        """LPIPS distance between images in [0, 1].

        Args:
            x, y: [H, W, 3] or [B, H, W, 3] (or [B, 3, H, W] with `channels_first`), same shape,
                both sides >= :attr:`min_side`.
            reduction: "mean" -> scalar over the batch; "none" -> [B].
        Returns:
            distance (0 for identical images), differentiable in both inputs.
        """
        if x.shape != y.shape:
            raise ValueError(f"lpips: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        if channels_first:
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"lpips: expected [B, 3, H, W], got {tuple(x.shape)}")
        else:
            if x.ndim == 3:
                x, y = x[None], y[None]
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"lpips: expected [H, W, 3] or [B, H, W, 3], got {tuple(x.shape)}")
            x, y = x.permute(0, 3, 1, 2), y.permute(0, 3, 1, 2)
        if min(x.shape[-2:]) < self.min_side:
            raise ValueError(f"lpips: images must be at least {self.min_side} px on each side, "
                             f"got {x.shape[-2]}x{x.shape[-1]}")
        # Each image on its own pass (autograd then records only the side that needs gradients, e.g.
        # the render and not the ground truth): [0, 1] -> [-1, 1] -> the ScalingLayer -> backbone.
        fx, fy = (self.layers(((2.0 * z.to(self.shift.dtype) - 1.0) - self.shift) / self.scale) for z in (x, y))
        d = x.new_zeros(x.shape[0], dtype=self.shift.dtype)
        for a, b, lin in zip(fx, fy, self.lins):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + EPS)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + EPS)
            d = d + lin((a - b) ** 2).mean((1, 2, 3))
        if reduction == "none":
            return d
        if reduction == "mean":
            return d.mean()
        raise ValueError(f"lpips: unknown reduction {reduction!r}")


# ------------------------------------------------------------------------------- loading
def _read(path: Path) -> dict[str, Tensor]:
    """A state dict of tensors from .safetensors or .pth (weights_only: no arbitrary unpickling)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any damage is one message
        msg = " ".join(str(e).split())[:200]
        raise LPIPSWeightsError(f"{path}: unreadable LPIPS weights ({type(e).__name__}: {msg})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise LPIPSWeightsError(f"{path}: not a state dict of tensors")
    return sd


def _canonical(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision / lpips-head key names for the lpips module's own ones (`net.sliceK.N.*`, `lins.K.*`)."""
    out = {}
    for k, v in sd.items():
        k2 = re.sub(r"^net\.slice\d\.(\d+)\.", r"features.\1.", k)
        k2 = re.sub(r"^lins\.(\d)\.", r"lin\1.", k2)
        k2 = re.sub(r"^(lin\d)\.model\.0\.weight$", r"\1.model.1.weight", k2)  # heads saved without dropout
        out.setdefault(k2, v)
    return out


def _find_backbone(d: Path, net: str) -> list[Path]:
    stem = "alexnet" if net == "alex" else "vgg16"
    canonical = d / SOURCES[net][0]
    if canonical.is_file():
        return [canonical]
    return sorted(p for p in d.iterdir() if p.is_file() and p.name.startswith(stem) and p.suffix == ".pth"
                  and not p.name.startswith("vgg16_bn"))


def _from_dir(d: Path, net: str) -> tuple[str, dict[str, Tensor], str]:
    nets = ("alex", "vgg") if net == "auto" else (net,)
    complete = [n for n in nets if (d / SOURCES[n][1]).is_file() and _find_backbone(d, n)]
    if not complete:
        n = next((n for n in nets if (d / SOURCES[n][1]).is_file() or _find_backbone(d, n)), nets[0])
        backbone, head, hint = SOURCES[n]
        stem = "alexnet" if n == "alex" else "vgg16"
        missing = [f"{stem}*.pth (e.g. {backbone})"] if not _find_backbone(d, n) else []
        missing += [head] if not (d / head).is_file() else []
        raise LPIPSWeightsError(f"{d}: LPIPS weights for net '{n}' incomplete, missing {' and '.join(missing)}; "
                                f"get {hint}")
    n = complete[0]
    found = _find_backbone(d, n)
    if len(found) > 1:
        raise LPIPSWeightsError(f"{d}: several backbone checkpoints for '{n}' ({', '.join(p.name for p in found)}); "
                                f"keep one")
    sd = {}
    for p in (found[0], d / SOURCES[n][1]):
        sd.update(_canonical(_read(p)))
    return n, sd, f"{found[0]} + {d / SOURCES[n][1]}"


def load_lpips(path: str | Path, net: str = "auto", device: str | torch.device | None = None) -> LPIPS:
    """LPIPS with the user's weights (nothing is downloaded); frozen, eval mode, on `device`.

    Args:
        path: a directory with the torchvision backbone checkpoint and the lpips head file, or one
            .safetensors / .pth file holding both key sets (see the module docstring).
        net: "alex", "vgg", or "auto" (a directory: alex when its files are there, else vgg; a file:
            from the first conv's kernel size).
        device: where the model lives (default CPU).
    Raises:
        LPIPSWeightsError (a ValueError): one line naming the file and what is missing or wrong.
    """
    if net not in ("auto", *NETS):
        raise LPIPSWeightsError(f"lpips: unknown net {net!r} (use 'alex', 'vgg' or 'auto')")
    path = Path(path).expanduser()
    if path.is_dir():
        net, sd, where = _from_dir(path, net)
    elif path.is_file():
        sd, where = _canonical(_read(path)), str(path)
        if net == "auto":
            w = sd.get("features.0.weight")
            if w is None or w.ndim != 4:
                raise LPIPSWeightsError(f"{path}: no backbone key features.0.weight (or net.slice1.0.weight); "
                                        f"expected LPIPS weights: {SOURCES['alex'][2]}")
            net = "alex" if w.shape[-1] == 11 else "vgg"
    else:
        raise LPIPSWeightsError(f"{path}: no such LPIPS weights file or directory; nothing is downloaded, "
                                f"get {SOURCES['alex' if net == 'auto' else net][2]}")
    expected = lpips_state_dict_keys(net)
    missing = [k for k in expected if k not in sd]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise LPIPSWeightsError(f"{where}: LPIPS ({net}) weights lack {missing[0]}{more}; expected {SOURCES[net][2]}")
    for k, shape in expected.items():
        if tuple(sd[k].shape) != shape:
            raise LPIPSWeightsError(f"{where}: {k} has shape {tuple(sd[k].shape)}, LPIPS ({net}) needs {shape}")
        if not sd[k].is_floating_point() or not torch.isfinite(sd[k]).all():
            raise LPIPSWeightsError(f"{where}: {k} is not finite floating point")
    model = LPIPS(net)
    with torch.no_grad():
        for i, *_ in NETS[net][0]:
            model.features[str(i)].weight.copy_(sd[f"features.{i}.weight"])
            model.features[str(i)].bias.copy_(sd[f"features.{i}.bias"])
        for j, lin in enumerate(model.lins):
            lin.weight.copy_(sd[f"lin{j}.model.1.weight"])
    return model.to(device) if device is not None else model
