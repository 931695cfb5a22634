"""The trainer behind `talksplat fit`: one readable loop.

Per step: draw a training time step and load the image of each of its C cameras (``--cameras-per-step
all``; one image with ``1``) -> pose the rig with the tracked parameters plus that time step's fine-tuning
offsets -> bind the Gaussians (their colour from that time step's expression and jaw with
``--dynamic-appearance``) -> rasterize the C cameras in one call -> weighted L1 + D-SSIM (the mean
over the C images) and the binding (and colour-blendshape) regularisers -> backward -> densification
hooks (fed the C-camera meta) -> Adam steps.  Checkpoints (safetensors + JSON header) hold everything needed to resume
bit-for-bit at the saved step.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from talksplat.avatar.gaussians import PARAM_NAMES, TENSOR_NAMES, GaussianAvatar
from talksplat.core.errors import TalksplatError
from talksplat.core.files import atomic_write
from talksplat.core.outputs import check_output_dir, clear_output_dir, is_output_of, output_lock, write_marker
from talksplat.data_prep.dataset import Dataset, DatasetError, check_files, load_dataset
from talksplat.render.device import pick_device
from talksplat.rigs.base import HeadRig, RigParams
from talksplat.rigs.sequence import FRAME_FIELDS, RigSequence

from . import fit_folder
from .config import FitConfig
from .data import FrameSampler, Sample, Views
from .fit_folder import CHECKPOINT, HELDOUT
from .strategy.base import Strategy



class FitError(TalksplatError):
    """A problem with the inputs of `talksplat fit` (one line, names the file)."""


def dataset_fingerprint(ds: Dataset) -> str:
    """sha256 over the dataset's rig id, transforms and tracked parameters (what a fit depends on)."""
    h = hashlib.sha256()
    h.update(json.dumps(ds.meta.get("rig", {}), sort_keys=True).encode())
    h.update((ds.root / "transforms.json").read_bytes())
    h.update((ds.root / "rig_params.npz").read_bytes())
    return h.hexdigest()


def open_dataset(path: Path) -> Dataset:
    """load_dataset with every way a folder can be broken turned into one :class:`FitError` line, and
    every image and mask checked to exist (one stat each) so a fit never fails hours in."""
    if not Path(path).is_dir():
        raise FitError(f"{path}: no such dataset directory (make one with `talksplat prep`)")
    try:
        ds = load_dataset(path)
        check_files(ds)
    except DatasetError as e:
        raise FitError(str(e)) from None
    except (OSError, KeyError, ValueError) as e:
        raise FitError(f"{path}: incomplete dataset ({e})") from None
    return ds


class FrameParams(nn.Module):
    """Tracked per-frame rig parameters (buffers) plus trainable fine-tuning offsets [T, ...]."""

    def __init__(self, ds: Dataset):
        super().__init__()
        self.register_buffer("shape", torch.as_tensor(ds.shape, dtype=torch.float32))
        for k in FRAME_FIELDS:
            tracked = torch.as_tensor(ds.params[k], dtype=torch.float32)
            self.register_buffer(f"tracked_{k}", tracked)
            setattr(self, f"delta_{k}", nn.Parameter(torch.zeros_like(tracked)))

    def delta(self, k: str) -> nn.Parameter:
        return getattr(self, f"delta_{k}")

    def rig_params(self, timesteps: torch.Tensor, tuned: bool = True) -> RigParams:
        """RigParams for the given [B] time steps (tracked + offsets when `tuned`)."""
        p = {}
        for k in FRAME_FIELDS:
            v = getattr(self, f"tracked_{k}")[timesteps]
            p[k] = v + self.delta(k)[timesteps] if tuned else v
        B = timesteps.shape[0]
        return RigParams(shape=self.shape[None].expand(B, -1), **p)

    def tuned_sequence(self, **extras) -> RigSequence:
        """Tracked + offsets for every time step (``extras`` stored beside them)."""
        frames = {k: (getattr(self, f"tracked_{k}") + self.delta(k)).detach().cpu().numpy() for k in FRAME_FIELDS}
        return RigSequence(self.shape.cpu().numpy(), frames, extras, source="tuned parameters")


def load_dataset_rig(ds, spec: str | None = None) -> HeadRig:
    """The rig a dataset was tracked with (or ``spec``); FitError when its checksum differs or the
    dataset's parameters do not fit its sizes."""
    from talksplat.rigs import DEFAULT_RIG, builtin_spec, load_rig

    rig_meta = ds.meta.get("rig", {})
    spec = spec or rig_meta.get("spec") or builtin_spec(rig_meta.get("name")) or rig_meta.get("name") or DEFAULT_RIG
    rig = load_rig(spec)
    if rig_meta.get("checksum") and rig_meta["checksum"] != rig.checksum:
        raise FitError(f"{ds.root}: dataset was tracked with rig '{rig_meta.get('name')}' "
                       f"(checksum {rig_meta['checksum'][:12]}...), but rig '{spec}' has checksum "
                       f"{rig.checksum[:12]}...")
    E, S = ds.params["expression"].shape[1], ds.shape.shape[0]
    if (E, S) != (rig.num_expression, rig.num_shape):
        raise FitError(f"{ds.root}/rig_params.npz: {E} expression and {S} shape coefficients, but rig "
                       f"'{rig.name}' has {rig.num_expression} and {rig.num_shape}")
    return rig


def prepare_fit_dir(cfg: FitConfig) -> None:
    """Check ``cfg.out`` before any work (see talksplat.core.outputs) and, for a fresh fit with
    ``--overwrite``, remove the previous fit's files so the folder never mixes two runs; marks the folder."""
    out = Path(cfg.out)
    inputs = (cfg.dataset, cfg.lpips_weights)
    if cfg.resume:
        check_output_dir(out, "fit", overwrite=False, inputs=inputs, allow_existing=True)
        if cfg.resume and not (out / CHECKPOINT).is_file():
            raise FitError(f"{out / CHECKPOINT}: no checkpoint to resume from")
    else:
        if out.is_dir() and any(out.iterdir()) and not cfg.overwrite and is_output_of(out, "fit"):
            raise FitError(f"{out}: already holds a fit (pass --resume to continue or --overwrite to replace it)")
        check_output_dir(out, "fit", cfg.overwrite, inputs)
        clear_output_dir(out, "fit")
    write_marker(out, "fit")


def checkpoint_origin(cfg: FitConfig) -> dict:
    """The checkpoint header's entries that say where and how it was made: ``dataset`` (resolved path) and
    ``config`` (the command's options as JSON)."""
    return {"dataset": str(Path(cfg.dataset).resolve()), "config": json.loads(json.dumps(asdict(cfg), default=str))}


def _checkpoint_metadata(header: dict) -> dict[str, str]:
    return {"talksplat": json.dumps(header)}


def set_checkpoint_origin(path: str | Path, cfg: FitConfig) -> Path:
    """Make the checkpoint file ``path`` say it was made with ``cfg`` (:func:`checkpoint_origin`), e.g. after
    a fit folder was copied for a run with the same effective options: the file becomes what the trainer
    writes under ``cfg``.  Replaced atomically by a new file (a hard link's other names keep the old one); left
    alone when it already says so."""
    from talksplat.core.files import set_safetensors_header

    return set_safetensors_header(path, checkpoint_origin(cfg), json.dumps)


def rng_state_tensors() -> dict[str, torch.Tensor]:
    """The random generators' states for a checkpoint: "rng.torch" (CPU generator, uint8), and
    "rng.cuda" [G, S] uint8 (one row per visible GPU) only when CUDA is available."""
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["rng.cuda"] = torch.stack([s.cpu() for s in torch.cuda.get_rng_state_all()])
    return out


def restore_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_state_tensors`.  "rng.cuda" is restored when present and CUDA is available
    (on as many GPUs as both have); a CPU checkpoint resumed on a GPU leaves the CUDA generators as they are."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = tensors.get("rng.cuda")
    if cuda is not None and torch.cuda.is_available():
        n = min(int(cuda.shape[0]), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([cuda[i] for i in range(n)])


class Trainer:
    """Fits a :class:`GaussianAvatar` to a dataset; see :class:`FitConfig` for every knob.

    The densification strategy is built from ``cfg.strategy`` (its ``build``), or given as ``strategy``: any
    object with the hooks of :class:`~talksplat.fitting.strategy.base.Strategy`."""

    #: Loss weight maps kept per image, at most this many bytes (512 px: 1 MiB each).
    WEIGHT_MAP_BYTES = 512 * 2 ** 20

    def __init__(self, cfg: FitConfig, strategy: Strategy | None = None):
        self.cfg = cfg
        self._weight_maps: dict[str, torch.Tensor] = {}
        self.steps, self.budget, per_face = cfg.resolved()
        # Densification: built from its config; the trainer never names a strategy class.
        self.strategy: Strategy = strategy if strategy is not None else cfg.strategy.build(self.steps, self.budget)
        if not isinstance(self.strategy, Strategy):
            raise TypeError(f"{type(self.strategy).__name__} is not a densification strategy (it lacks hooks of "
                            "talksplat.fitting.strategy.base.Strategy)")
        self.ds = open_dataset(cfg.dataset)
        self.fingerprint = dataset_fingerprint(self.ds)
        self.rig: HeadRig = load_dataset_rig(self.ds, cfg.rig)
        self.out = Path(cfg.out)
        ckpt = self.out / CHECKPOINT
        self.device = pick_device(cfg.device)
        self.lpips = None
        if cfg.lpips_weights is not None:
            from .lpips import LPIPSWeightsError, load_lpips

            try:
                self.lpips = load_lpips(cfg.lpips_weights, device=self.device)
            except LPIPSWeightsError as e:
                raise FitError(str(e)) from None
        self.last_parts: dict[str, float] = {}
        torch.manual_seed(cfg.seed)
        self.source_frame = self.ds.source_frame
        if cfg.background == "plate" and self.source_frame is None:
            raise FitError(f"{self.ds.root}: --background plate needs a dataset with a plate (a monocular video "
                           "prepared by this version of `talksplat prep`)")
        self.use_plate = self.source_frame is not None and cfg.background in ("auto", "plate")
        person_free = self.use_plate and cfg.torso and cfg.torso_plate == "person-free"
        if person_free and self.source_frame.background_plate is None:
            warnings.warn(f"{self.ds.root}: no person-free plate (prepared by an earlier talksplat prep): the torso "
                          "Gaussians are fitted over the plate that keeps the median torso", UserWarning, stacklevel=2)
            person_free = False
        # [H, W, 3] uint8, the whole frame: background and median torso, or (person-free) the background alone
        self.plate = self.ds.load_plate(person_free=person_free) if self.use_plate else None
        self.sampler = FrameSampler(self.ds, "train", cfg.cache_mb, cfg.seed, self.device, plate=self.plate)
        self.whole = None  # the whole source frames a --torso fit trains on every `torso_every` steps
        if cfg.torso:
            from .data import WholeFrames

            if not self.use_plate:
                raise FitError(f"{self.ds.root}: --torso trains on whole source frames over the plate: it needs a "
                               "monocular dataset with a plate and --background auto or plate")
            try:
                self.whole = WholeFrames(self.ds, self.plate, cfg.torso_size, cfg.seed, self.device,
                                         cache_mb=cfg.cache_mb // 4)
            except ValueError as e:
                raise FitError(f"--torso: {e}") from None
        prepare_fit_dir(cfg)  # every input is read and checked: only now is the output folder touched
        self.views_per_step = self._views_per_step()
        self.rig = self.rig.to(self.device)
        self.frames = FrameParams(self.ds).to(self.device)
        self.step = 0
        if cfg.resume:
            self._load_checkpoint(ckpt)
        else:
            from talksplat.avatar import init_avatar

            self.avatar = init_avatar(self.rig.cpu(), per_face=per_face, sh_degree=cfg.sh_degree,
                                      opacity=0.5, bake_light=False,
                                      dynamic_appearance=cfg.uses_dynamic_appearance,
                                      dynamic_geometry=cfg.dynamic_geometry).to(self.device)
            self.rig = self.rig.to(self.device)
            if cfg.torso:
                self._add_torso()
            self._make_optimizers()
            self.strategy_state = self.strategy.initialize_state()
        # [T, 4, 4]: the torso pose of every time step (an avatar with a torso), from the tracked sequence
        self.torso_poses = self._tracked_torso_poses() if self.avatar.has_torso else None

    # ------------------------------------------------------------------ setup
    def _tracked_torso_poses(self) -> torch.Tensor:
        """[T, 4, 4]: the torso poses of the tracked (not fine-tuned) sequence, smoothed over time
        (:func:`talksplat.avatar.torso.sequence_torso_poses`)."""
        from talksplat.avatar.torso import sequence_torso_poses

        T = self.frames.tracked_expression.shape[0]
        return sequence_torso_poses(self.rig, self.frames.rig_params(torch.arange(T, device=self.device), tuned=False),
                                    float(self.ds.meta.get("fps", 25.0)))

    def _add_torso(self) -> None:
        """Append the torso Gaussians (:func:`talksplat.avatar.init.add_torso`), each coloured by the first whole
        training frame where it projects (beyond the frame's edge: the nearest edge pixel, so the torso runs out
        of the frame instead of stopping short of it), opaque where that frame's mask says person, nearly
        transparent elsewhere (the proxy is wider than most shoulders; the opacity pruning removes what stays
        unused)."""
        from talksplat.avatar.init import add_torso
        from talksplat.data_prep.tracking import project
        from talksplat.render.sh import rgb_to_sh

        av = add_torso(self.avatar, self.rig.cpu(), per_face=8).to(self.device)
        self.rig = self.rig.to(self.device)
        t0 = self.whole.timesteps[0]
        sample = self.whole.load(t0)
        pose = self._tracked_torso_poses()[t0:t0 + 1]
        torso = av.binding >= self.rig.faces.shape[0]
        with torch.no_grad():
            verts = self.rig(self.frames.rig_params(torch.tensor([t0], device=self.device), tuned=False)).vertices
            means = av.posed_geometry(verts, self.rig.faces, pose)[0][0, torso]  # [M, 3] world
            uv = project(means[None], sample.viewmat[None], sample.K[None])[0, 0]  # [M, 2] px
            depth = means @ sample.viewmat[2, :3] + sample.viewmat[2, 3]
            grid = torch.stack([uv[:, 0] / self.whole.width, uv[:, 1] / self.whole.height], -1) * 2 - 1
            look = lambda img: torch.nn.functional.grid_sample(  # noqa: E731
                img.permute(2, 0, 1)[None], grid[None, None], align_corners=False, padding_mode="border")[0, :, 0].T
            rgb = look(sample.image)  # [M, 3]
            person = look(sample.mask[..., None])[:, 0]  # [M]
            opaque = (depth > 0) & (person > 0.5)
            av.sh_dc[torso] = rgb_to_sh(rgb)[:, None]
            av.opacity_logits[torso] = torch.where(opaque, 2.0, -4.0)
        self.avatar = av

    def _views_per_step(self) -> bool:
        """Whether a step renders every camera of its time step (``--cameras-per-step all`` and one image
        size over the training images: one rasterization call has one size); warns when it falls back."""
        if self.cfg.cameras_per_step == "1":
            return False
        mixed = self.sampler.mixed_sizes()
        if mixed is not None:
            shown = ", ".join(f"{cam} {w}x{h}" for cam, (w, h) in mixed.items())
            warnings.warn(f"{self.ds.root}: the cameras' images differ in size ({shown} px) and one rasterization "
                          "call renders one size, so each fit step trains on one image (as --cameras-per-step 1)",
                          UserWarning, stacklevel=3)
            return False
        return True

    def _make_optimizers(self) -> None:
        """One Adam per avatar tensor (and per tuned frame field), learning rates from ``cfg.optim``; the strategy
        checks that it can work on them."""
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        # CUDA: one fused kernel per optimizer step instead of a dozen small ones (the CPU keeps torch's default)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        for k in PARAM_NAMES:
            self.optimizers[k] = torch.optim.Adam([getattr(self.avatar, k)], lr=self.cfg.optim.lr(k), eps=1e-15,
                                                  **fused)
        if self.cfg.tune_params:
            for k in FRAME_FIELDS:
                self.optimizers[f"frame.{k}"] = torch.optim.Adam([self.frames.delta(k)], lr=self.cfg.optim.lr(k),
                                                                 **fused)
        self.strategy.check_sanity(self.avatar, self._avatar_optimizers())

    def target(self, batch: Sample | Views) -> tuple[torch.Tensor, torch.Tensor]:
        """What a step renders over and what it compares with: (target [H, W, 3] or [C, H, W, 3], background).

        Over the plate: the images as they are, and each camera's view of the plate (same shape).  Otherwise: the
        masked foregrounds over a flat colour, and that colour [3] (:meth:`background`)."""
        if self.use_plate:
            return batch.image, batch.plate
        bg = self.background()
        return batch.composite(bg), bg

    def background(self) -> torch.Tensor:
        """[3] in [0, 1]: the flat colour of this step (``--background white | black | random``)."""
        if self.cfg.background in ("white", "auto", "plate"):
            return torch.ones(3, device=self.device)
        if self.cfg.background == "black":
            return torch.zeros(3, device=self.device)
        # the CPU generator on every device: a seeded fit draws the same backgrounds on CPU and CUDA
        return torch.rand(3).to(self.device, non_blocking=True)

    def sh_degree_at(self, step: int) -> int:
        return min(self.cfg.sh_degree, step // max(1, self.cfg.sh_every))

    # ------------------------------------------------------------------ render
    def render(self, batch: Sample | Views, params: RigParams, background: torch.Tensor, sh_degree: int):
        """The avatar posed by ``params`` (one time step) seen by the batch's cameras, in ONE rasterization call.

        Args:
            batch: one image (:class:`Sample`) or the C images of one time step (:class:`Views`).
            params: RigParams of that time step (batch 1).  background: [3] in [0, 1], behind every camera, or
                an image per camera ([H, W, 3] for a Sample, [C, H, W, 3] for Views) in [0, 1].
        Returns:
            colors [H, W, 3] for a Sample, [C, H, W, 3] for Views (in [0, 1]); meta: the rasterizer's meta
            of the C cameras (``means2d`` [C, N, 2], ``radii`` [C, N, 2], ``n_cameras`` C, ...), plus ``alphas``
            [C, H, W, 1], the avatar's opacity in each image.
        """
        one = isinstance(batch, Sample)
        views = Views([batch]) if one else batch
        colors, meta = self.render_cameras(params, views.viewmats(), views.Ks(), views.width, views.height,
                                           background[None] if one and background.dim() == 3 else background,
                                           sh_degree, self.torso_at(batch.timestep))
        return (colors[0] if one else colors), meta

    def torso_at(self, timestep: int) -> torch.Tensor | None:
        """[1, 4, 4] the torso pose of a time step (smoothed over the tracked sequence), or None (no torso)."""
        return None if self.torso_poses is None else self.torso_poses[int(timestep)][None]

    def render_cameras(self, params: RigParams, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
                       background: torch.Tensor, sh_degree: int, torso: torch.Tensor | None = None):
        """The avatar posed by ``params`` (batch 1; ``torso`` [1, 4, 4] its torso pose, with a torso) seen by C
        cameras (``viewmats`` [C, 4, 4] world-to-camera, OpenCV; ``Ks`` [C, 3, 3] px) at width x height, in one
        rasterization call, over ``background`` ([3] in [0, 1] behind every camera, or [C, H, W, 3]).  Returns
        colors [C, H, W, 3] and the rasterizer's meta plus ``alphas`` [C, H, W, 1] (see :meth:`render`)."""
        from talksplat.avatar.render import pose_inputs
        from talksplat.render import rasterization

        out, code, torso = pose_inputs(self.avatar, self.rig, params, torso)
        g = self.avatar.world(out.vertices, self.rig.faces, code, torso)[0]
        flat = background.dim() == 1
        colors, alphas, meta = rasterization(g.means, g.quats, g.scales, g.opacities, g.sh, viewmats, Ks, width,
                                             height, sh_degree=sh_degree,
                                             backgrounds=background[None].expand(len(viewmats), -1).contiguous()
                                             if flat else None)
        if not flat:  # over an image: alpha compositing after the rasterizer (it takes one colour per camera)
            colors = colors + (1 - alphas) * background
        meta["alphas"] = alphas
        return colors, meta

    # ------------------------------------------------------------------ losses
    def _weight_map(self, sample: Sample) -> torch.Tensor | None:
        """[H, W] float32 loss weights of one image (mouth / eye regions from its landmarks), or None (uniform)."""
        from .regions import loss_weight_map

        cfg = self.cfg.loss
        if sample.landmarks is None or (cfg.mouth_weight == 1 and cfg.eye_weight == 1):
            return None
        # drawn once per image and kept on the device (cv2 on the host every step cost 7.5 ms at 512 px)
        weight = self._weight_maps.get(sample.frame.image)
        if weight is None:
            w = loss_weight_map(sample.landmarks, sample.frame.height, sample.frame.width, mouth=cfg.mouth_weight,
                                eyes=cfg.eye_weight)
            weight = torch.from_numpy(w).to(self.device)
            if (len(self._weight_maps) + 1) * weight.numel() * 4 <= self.WEIGHT_MAP_BYTES:
                self._weight_maps[sample.frame.image] = weight
        return weight

    def loss(self, render: torch.Tensor, target: torch.Tensor, batch: Sample | Views,
             alphas: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The training loss of one step and its image terms.

        Args:
            render, target: [H, W, 3] for a Sample, [C, H, W, 3] for Views, in [0, 1].
            batch: what was rendered (its images' landmarks give the loss weight maps, its masks the background).
            alphas: [C, H, W, 1] the avatar's opacity (over a plate: penalised where the masks say background).
        Returns:
            (scalar loss, {"photo": ..., "outside": ... over a plate, "lpips": ... when it applies}); the image
            terms are the mean over the C images of each image's own (weighted) loss.
        """
        from .losses import photometric_loss

        cfg = self.cfg.loss
        if isinstance(batch, Sample):
            photo = photometric_loss(render, target, weight=self._weight_map(batch), lambda_dssim=cfg.lambda_dssim)
        else:
            maps = [self._weight_map(s) for s in batch.samples]
            weight = None
            if any(m is not None for m in maps):  # an image without landmarks weighs its pixels uniformly
                ones = torch.ones(batch.height, batch.width, device=render.device)
                weight = torch.stack([ones if m is None else m for m in maps])
            # each image normalised by its own weights, then the mean over the C images
            photo = photometric_loss(render, target, weight=weight, lambda_dssim=cfg.lambda_dssim,
                                     reduction="none").mean()
        av = self.avatar
        pos = torch.relu(av.local_means.norm(dim=-1) - cfg.position_limit).mean()
        scl = torch.relu(torch.exp(av.log_scales) - cfg.scale_limit).mean()
        o = av.opacities
        opa = (o * (1 - o)).mean()
        total = photo + cfg.lambda_position * pos + cfg.lambda_scale * scl + cfg.lambda_opacity * opa
        if av.sh_dc_blend.shape[1]:  # colour blendshapes: L2, so rare or unseen expressions keep the base colour
            blend = av.sh_dc_blend.reshape(-1)  # [N * D * 3]: each Gaussian's sum of squares, mean over Gaussians
            total = total + cfg.lambda_appearance * (blend @ blend) / av.num_gaussians
        if av.means_blend.shape[1]:  # position blendshapes: L2 likewise (the rig's shape for unseen expressions)
            blend = av.means_blend.reshape(-1)
            total = total + cfg.lambda_geometry * (blend @ blend) / av.num_gaussians
        parts = {"photo": photo}
        if self.use_plate and alphas is not None and cfg.lambda_outside > 0:
            masks = batch.mask[None] if isinstance(batch, Sample) else torch.stack([s.mask for s in batch.samples])
            parts["outside"] = (alphas[..., 0] * (1 - masks)).mean()
            total = total + cfg.lambda_outside * parts["outside"]
        # LPIPS on each whole image, the mean over them (skipped under the backbone's minimum size).
        if self._lpips_applies(render):
            parts["lpips"] = self.lpips(render, target)
            total = total + cfg.lambda_lpips * parts["lpips"]
        if self.cfg.tune_params:
            reg = sum((self.frames.delta(k) ** 2).mean() for k in FRAME_FIELDS)
            total = total + cfg.lambda_offsets * reg
        return total, parts

    def _lpips_applies(self, render: torch.Tensor) -> bool:
        """LPIPS weights were given and the [H, W, 3] (or [C, H, W, 3]) images are big enough for the backbone."""
        return self.lpips is not None and min(render.shape[-3:-1]) >= self.lpips.min_side

    # ------------------------------------------------------------------ training
    def train(self, progress=None, checkpoints: bool = True) -> None:
        """Run from the current step to `self.steps`, checkpointing every `checkpoint_every` steps and
        at the end (unless `checkpoints` is False: benchmarks)."""
        cfg = self.cfg
        lr0, decay = cfg.optim.lr("local_means"), cfg.optim.means_decay
        lr_blend0 = cfg.optim.lr("means_blend")
        t_start, s_start = time.perf_counter(), self.step
        # The first step whose loss was not finite, kept on the device (no host sync per step); read
        # at each progress update, before each checkpoint and at the end.
        first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        while self.step < self.steps:
            step = self.step
            # Positions: exponential decay to `means_decay` (1 %) over the run (as 3DGS / gsplat).
            # (and the position blendshapes, which move positions too: a constant rate would keep them jittering)
            f = decay ** (step / max(1, self.steps))
            self.optimizers["local_means"].param_groups[0]["lr"] = lr0 * f
            self.optimizers["means_blend"].param_groups[0]["lr"] = lr_blend0 * f
            batch = self._next_batch(step)
            target, bg = self.target(batch)
            ts = torch.tensor([batch.timestep], device=self.device)
            params = self.frames.rig_params(ts, tuned=cfg.tune_params)
            render, meta = self.render(batch, params, bg, self.sh_degree_at(step))
            loss, parts = self.loss(render, target, batch, meta["alphas"])
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
            self.strategy.step_pre_backward(self.avatar, self._avatar_optimizers(), self.strategy_state, step, meta)
            loss.backward()
            for opt in self.optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            # After the Adam steps: refinement replaces the avatar's Parameters (the new ones have no
            # gradient yet); the 2D-mean gradients it reads live on `meta`, untouched by zero_grad.
            self.strategy.step_post_backward(self.avatar, self._avatar_optimizers(), self.strategy_state, step, meta)
            self.step += 1
            report = progress is not None and (self.step % cfg.log_every == 0 or self.step == self.steps)
            save = checkpoints and (self.step % cfg.checkpoint_every == 0 or self.step == self.steps)
            if report or save or self.step == self.steps:
                self._check_finite(int(first_bad))
            if report:
                with torch.no_grad():
                    mse = ((render - target) ** 2).mean()
                    psnr = float(-10 * torch.log10(mse.clamp_min(1e-10)))
                rate = (self.step - s_start) / max(1e-9, time.perf_counter() - t_start)
                self.last_parts = {k: float(v.detach()) for k, v in parts.items()}
                progress(self.step, self.steps, float(loss.detach()), psnr, self.avatar.num_gaussians, rate)
            if save:
                self.save_checkpoint()

    def _next_batch(self, step: int) -> Sample | Views:
        """This step's images: every camera of a random time step (:class:`Views`), or one random image.  A time
        step with one image comes as that :class:`Sample`, so a monocular fit runs exactly the one-image code.
        With --torso, one step in ``torso_every`` draws a whole source frame instead (over the plate)."""
        if self.whole is not None and step % self.cfg.torso_every == self.cfg.torso_every - 1:
            return self.whole.sample()
        if not self.views_per_step:
            return self.sampler.sample()
        views = self.sampler.sample_views()
        return views.samples[0] if len(views) == 1 else views

    def _check_finite(self, first_bad: int) -> None:
        """Stop with one line when a loss was NaN/Inf (the parameters are then garbage); the last
        checkpoint on disk, written before that step, is kept."""
        if first_bad < 0:
            return
        ckpt = self.out / CHECKPOINT
        kept = ""
        if ckpt.is_file():
            from safetensors import safe_open

            with safe_open(str(ckpt), "pt") as f:
                kept = f"; the last good checkpoint ({ckpt}, step {json.loads(f.metadata()['talksplat'])['step']}) is kept"
        raise FitError(f"{self.cfg.dataset}: the training loss became non-finite (NaN or Inf) at step {first_bad + 1}; "
                       f"stopped{kept}; try lower learning rates (--optim.lr-*) or check the dataset")

    def _avatar_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {k: self.optimizers[k] for k in PARAM_NAMES}

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Everything to resume at this step: avatar, offsets, optimiser and strategy state, RNGs."""
        from safetensors.torch import save_file

        self.out.mkdir(parents=True, exist_ok=True)
        tensors = {f"avatar.{k}": getattr(self.avatar, k).detach() for k in TENSOR_NAMES}
        for k in FRAME_FIELDS:
            tensors[f"frame.{k}"] = self.frames.delta(k).detach()
        opt_steps = {}
        for name, opt in self.optimizers.items():
            p = opt.param_groups[0]["params"][0]
            st = opt.state.get(p)
            if st:
                tensors[f"opt.{name}.exp_avg"] = st["exp_avg"]
                tensors[f"opt.{name}.exp_avg_sq"] = st["exp_avg_sq"]
                opt_steps[name] = float(st["step"])
        extra_state = {}
        for k, v in self.strategy_state.items():
            if isinstance(v, torch.Tensor):
                tensors[f"strategy.{k}"] = v
            else:
                extra_state[k] = v
        tensors.update(rng_state_tensors())
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        where = checkpoint_origin(self.cfg)
        header = {"format": "talksplat-fit-checkpoint", "version": 1, "step": self.step, "steps": self.steps,
                  "dataset_fingerprint": self.fingerprint, "dataset": where["dataset"],
                  "rig_name": self.rig.name, "rig_checksum": self.rig.checksum, "sh_degree": self.avatar.sh_degree,
                  "opt_steps": opt_steps, "opt_lrs": {n: o.param_groups[0]["lr"] for n, o in self.optimizers.items()},
                  "strategy_state": extra_state, "sampler": self.sampler.state(), "config": where["config"]}
        path = self.out / CHECKPOINT
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata=_checkpoint_metadata(header))
        return path

    def _load_checkpoint(self, path: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), "pt") as f:
                header = json.loads(f.metadata()["talksplat"])
            t = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any damage is one message
            raise FitError(f"{path}: unreadable checkpoint ({e})") from None
        if header.get("dataset_fingerprint") != self.fingerprint:
            raise FitError(f"{path}: checkpoint belongs to another dataset ({header.get('dataset')}); "
                           f"--resume needs the dataset it was started on")
        if header.get("rig_checksum") != self.rig.checksum:
            raise FitError(f"{path}: checkpoint was made with another rig")
        dev = self.device
        # a checkpoint from before colour blendshapes lacks avatar.sh_dc_blend: a static colour (D = 0)
        self.avatar = GaussianAvatar(**{k: t.get(f"avatar.{k}") for k in TENSOR_NAMES},
                                     rig_name=self.rig.name, rig_checksum=self.rig.checksum,
                                     sh_degree=int(header["sh_degree"])).to(dev)
        with torch.no_grad():
            for k in FRAME_FIELDS:
                self.frames.delta(k).copy_(t[f"frame.{k}"])
        self._make_optimizers()
        for name, opt in self.optimizers.items():
            if name in header["opt_steps"]:
                p = opt.param_groups[0]["params"][0]
                n = header["opt_steps"][name]
                # fused Adam (CUDA) keeps its step count as float32 on the parameter's device
                step = (torch.tensor(float(n), dtype=torch.float32, device=p.device) if opt.defaults.get("fused")
                        else torch.tensor(n))
                opt.state[p] = {"step": step,
                                "exp_avg": t[f"opt.{name}.exp_avg"].to(dev),
                                "exp_avg_sq": t[f"opt.{name}.exp_avg_sq"].to(dev)}
            opt.param_groups[0]["lr"] = header["opt_lrs"].get(name, opt.param_groups[0]["lr"])
        state = self.strategy.initialize_state()
        state.update(header.get("strategy_state", {}))
        for k in list(t):
            if k.startswith("strategy."):
                state[k[len("strategy."):]] = t[k].to(dev)
        self.strategy_state = state
        restore_rng_state(t)
        self.sampler.load_state(header["sampler"])
        self.step = int(header["step"])
        self.steps = max(self.steps, self.step) if self.cfg.steps is None else self.cfg.steps
        if self.cfg.steps is None:
            self.steps = int(header["steps"])

    # ------------------------------------------------------------------ evaluation and outputs
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Figures on the held-out time steps (the tracked parameters; never training images), and side-by-side
        PNGs (ground truth | render | error) in OUT/heldout.

        Crop (the dataset's images): ``psnr`` / ``ssim`` (mean), ``psnr_min`` (the worst image), ``mouth_psnr`` /
        ``mouth_ssim`` (the mouth region), ``mouth_open_psnr`` over the ``mouth_open_images`` images whose mouth is
        open (:data:`~talksplat.fitting.regions.OPEN_MOUTH`), ``lpips`` when its weights were given; rendered as
        trained: over the plate against the image as it is, or on white against the masked foreground.
        ``fg_psnr`` / ``fg_ssim``:
        render and image both masked onto white by the image's mask (one figure for every ``--background``).  With
        a dataset that has a plate, the whole source frame of each held-out step, the avatar over the plate (also
        for an avatar fitted on a flat colour: pasted into the frame): ``frame_psnr``, ``frame_ssim``,
        ``frame_psnr_min`` over ``frames`` frames at the dataset's source-frame size, ``frame_body_psnr`` over all
        of those frames but the tracked head (torso, shoulders and background: what the plate holds).  ``outside``:
        the share of the avatar's opacity that falls where the image's mask says background (Gaussians painting
        background)."""
        from .losses import psnr, ssim_map
        from .regions import OPEN_MOUTH, mouth_gap, region_mask

        held = set(self.ds.split.get("heldout", []))
        idx = [i for i, f in enumerate(self.ds.frames) if f.timestep in held]
        if not idx:
            return {}
        if self.cfg.eval_frames and len(idx) > self.cfg.eval_frames:
            idx = [idx[int(round(j))] for j in np.linspace(0, len(idx) - 1, self.cfg.eval_frames)]
        sampler = FrameSampler(self.ds, "heldout", cache_mb=64, device=self.device, plate=self.plate)
        white = torch.ones(3, device=self.device)
        rows: dict[str, list[float]] = {k: [] for k in ("psnr", "ssim", "mouth_psnr", "mouth_ssim", "lpips", "fg_psnr",
                                                        "fg_ssim", "frame_psnr", "frame_ssim", "mouth_open_psnr",
                                                        "outside", "frame_body_psnr")}
        show = set(idx[:: max(1, len(idx) // max(1, self.cfg.side_by_side))][: self.cfg.side_by_side])
        (self.out / HELDOUT).mkdir(parents=True, exist_ok=True)

        def score(render: torch.Tensor, target: torch.Tensor, prefix: str = "") -> torch.Tensor:
            rows[f"{prefix}psnr"].append(float(psnr(render, target)))
            smap = ssim_map(render.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])[0].mean(0)
            rows[f"{prefix}ssim"].append(float(smap.mean()))
            return smap

        for i in idx:
            s = sampler.load(i)
            target, bg = (s.image, s.plate) if self.use_plate else (s.composite(white), white)
            ts = torch.tensor([s.timestep], device=self.device)
            render, meta = self.render(s, self.frames.rig_params(ts, tuned=False), bg, self.avatar.sh_degree)
            render = render.clamp(0, 1)
            smap = score(render, target)
            alpha = meta["alphas"][0, ..., 0]
            rows["outside"].append(float((alpha * (1 - s.mask)).sum() / alpha.sum().clamp_min(1e-9)))
            if self._lpips_applies(render):
                rows["lpips"].append(float(self.lpips(render, target)))
            if s.landmarks is not None:
                m = torch.from_numpy(region_mask(s.landmarks, s.frame.height, s.frame.width, "mouth")).to(self.device)
                if m.any():
                    rows["mouth_psnr"].append(float(psnr(render, target, mask=m)))
                    rows["mouth_ssim"].append(float(smap[m].mean()))
                    if mouth_gap(s.landmarks) > OPEN_MOUTH:  # teeth and tongue in view
                        rows["mouth_open_psnr"].append(rows["mouth_psnr"][-1])
            m = s.mask[..., None]  # the image's mask on both: the foreground figure of every --background
            score(render * m + (1 - m), s.composite(white), "fg_")
            if i in show:
                self._write_panel(self.out / HELDOUT / f"{s.timestep:05d}_{s.frame.camera}.png", target, render)
        psnr_min = min(rows["psnr"])
        if self.source_frame is not None:
            self._evaluate_frames(sorted({self.ds.frames[i].timestep for i in idx}), rows, score,
                                  {self.ds.frames[i].timestep for i in show})
        out = {k: float(np.mean(v)) for k, v in rows.items() if v}
        out["psnr_min"] = psnr_min
        out["images"] = len(idx)
        out["mouth_open_images"] = len(rows["mouth_open_psnr"])
        if rows["frame_psnr"]:
            out["frame_psnr_min"] = min(rows["frame_psnr"])
            out["frames"] = len(rows["frame_psnr"])
        return out

    def _evaluate_frames(self, timesteps: list[int], rows: dict, score, show: set[int]) -> None:
        """The whole source frame of each held-out time step that prep kept: the avatar over the plate, scored by
        ``score(render, target, "frame_")``; panels for the time steps in ``show``."""
        from .losses import psnr

        sf = self.source_frame
        viewmat = torch.as_tensor(sf.viewmat, dtype=torch.float32, device=self.device)
        K = torch.as_tensor(sf.K, dtype=torch.float32, device=self.device)
        plate = self.plate if self.plate is not None else self.ds.load_plate()  # a flat-colour fit: read it here
        plate = torch.from_numpy(plate).to(self.device).float() / 255.0
        crops = {f.timestep: f for f in self.ds.frames}
        for t in timesteps:
            frame = self.ds.load_source_frame(t)
            if frame is None:
                continue
            target = torch.from_numpy(frame).to(self.device).float() / 255.0
            render = self.render_frame(t, viewmat, K, sf.width, sf.height, plate)
            score(render, target, "frame_")
            body = self._body_region(t, crops.get(t), sf)
            if body is not None and body.any():  # the torso and background: what the plate holds
                rows["frame_body_psnr"].append(float(psnr(render, target, mask=body.to(self.device))))
            if t in show:
                self._write_panel(self.out / HELDOUT / f"frame_{t:05d}.png", target, render)

    def _body_region(self, timestep: int, crop, sf) -> torch.Tensor | None:
        """[H, W] bool over the source frame of a time step: everything but the tracked head (the rig's silhouette
        dilated by :data:`~talksplat.data_prep.plate.HEAD_DILATE` of the head crop's side, as the plate leaves
        out): torso, shoulders and background.  None without the time step's crop (``crop``, a dataset
        :class:`Frame`)."""
        from talksplat.data_prep.plate import HEAD_DILATE, head_silhouettes

        if crop is None:
            return None
        side = crop.width * sf.K[0, 0] / crop.K[0, 0]  # the crop's side in source px
        with torch.no_grad():
            verts = self.rig(self.frames.rig_params(torch.tensor([timestep], device=self.device), tuned=False)).vertices
        head = head_silhouettes(verts, self.rig.faces, sf.K, sf.viewmat, sf.width, sf.height,
                                dilate=HEAD_DILATE * side)[0]
        return ~torch.from_numpy(head)

    def render_frame(self, timestep: int, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                     background: torch.Tensor, tuned: bool = False) -> torch.Tensor:
        """[H, W, 3] in [0, 1]: time step ``timestep`` (tracked parameters, or the tuned ones) seen by one camera
        (viewmat [4, 4], K [3, 3] px, width x height) over ``background`` ([3] or [H, W, 3])."""
        ts = torch.tensor([timestep], device=self.device)
        render, _ = self.render_cameras(self.frames.rig_params(ts, tuned=tuned), viewmat[None], K[None], width, height,
                                        background if background.dim() == 1 else background[None],
                                        self.avatar.sh_degree, self.torso_at(timestep))
        return render[0].clamp(0, 1)

    def _write_panel(self, path: Path, target: torch.Tensor, render: torch.Tensor) -> None:
        """ground truth | render | 4 x |error| side by side, as a PNG."""
        err = (render - target).abs().mean(-1, keepdim=True).expand(-1, -1, 3) * 4
        self._write_png(path, torch.cat([target, render, err.clamp(0, 1)], dim=1))

    @staticmethod
    def _write_png(path: Path, image: torch.Tensor) -> None:
        import cv2

        from talksplat.render.video import to_uint8

        with atomic_write(path) as tmp:
            cv2.imwrite(str(tmp), to_uint8(image)[..., ::-1])

    def write_outputs(self, metrics: dict) -> None:
        """avatar.safetensors, avatar.ply, tuned_params.npz, metrics.json (each written atomically, through
        :mod:`talksplat.fitting.fit_folder`)."""
        fit_folder.write_avatar(self.out, self.avatar.cpu(),
                                extra={"dataset": str(Path(self.cfg.dataset).resolve()), "steps": self.step})
        self.avatar.to(self.device)
        rig = self.rig.cpu()
        with torch.no_grad():  # the subject's neutral head: tracked identity, no expression, no pose
            neutral = rig.shaped_vertices(self.frames.shape.cpu()[None], torch.zeros(1, rig.num_expression))[0]
        fit_folder.write_ply(self.out, self.avatar.cpu(), rig, vertices=neutral)
        self.avatar.to(self.device)
        self.rig.to(self.device)
        tracked = self.ds.rig_params  # kept beside the tuned values as original_shape, original_expression, ...
        original = {f"original_{k}": v for k, v in {"shape": tracked.shape, **tracked.frames}.items()}
        fit_folder.write_tuned(self.out, self.frames.tuned_sequence(**original))
        if self.use_plate:
            fit_folder.write_source_frame(self.out, self.plate, self.source_frame)
        fit_folder.write_metrics(self.out, metrics)


def run_fit(cfg: FitConfig) -> dict:
    """Do the work of `talksplat fit` (the avatar stage), holding the output folder's lock; returns the
    metrics written to metrics.json."""
    with output_lock(cfg.out):
        return _run_fit(cfg)


def _run_fit(cfg: FitConfig) -> dict:
    from talksplat.core.progress import progress_bar, show_progress

    if cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise FitError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
    trainer = Trainer(cfg)
    t0 = time.perf_counter()
    start = trainer.step
    board = SummaryWriter(str(Path(cfg.out) / "tb")) if cfg.tensorboard else None

    def log(step, total, loss, psnr, n, rate):
        if board is not None:
            board.add_scalar("train/loss", loss, step)
            board.add_scalar("train/psnr", psnr, step)
            board.add_scalar("train/gaussians", n, step)
            board.add_scalar("train/steps_per_second", rate, step)
            if "lpips" in trainer.last_parts:
                board.add_scalar("train/lpips", trainer.last_parts["lpips"], step)

    if not show_progress(cfg.quiet):
        trainer.train(log)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        with progress_bar(TextColumn("fit"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                          TimeElapsedColumn()) as bar:
            task = bar.add_task("", total=trainer.steps, completed=trainer.step)

            def progress(step, total, loss, psnr, n, rate):
                log(step, total, loss, psnr, n, rate)
                lp = f"LPIPS {trainer.last_parts['lpips']:.4f}  " if "lpips" in trainer.last_parts else ""
                bar.update(task, completed=step, description=f"loss {loss:.4f}  PSNR {psnr:.2f}  {lp}"
                                                             f"{n} Gaussians  {rate:.1f} steps/s")

            trainer.train(progress)
    seconds = time.perf_counter() - t0
    metrics = {"step": trainer.step, "steps": trainer.steps, "num_gaussians": trainer.avatar.num_gaussians,
               "device": str(trainer.device), "seconds": round(seconds, 2),
               "steps_per_second": round((trainer.step - start) / max(seconds, 1e-9), 3),
               "heldout": trainer.evaluate()}
    trainer.write_outputs(metrics)
    if board is not None:
        for k, v in metrics["heldout"].items():
            board.add_scalar(f"heldout/{k}", v, trainer.step)
        board.close()
    return metrics
