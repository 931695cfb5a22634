"""Adaptive density control for Gaussians bound to rig triangles (GaussianAvatars-style).

:class:`BindingStrategy` implements the hooks of :class:`~talksplat.fitting.strategy.base.Strategy`
(gsplat 1.5.3's, ``gsplat/strategy/default.py``) on a :class:`~talksplat.avatar.GaussianAvatar`
instead of a dict of parameters: sizes are judged in *face units* (the avatar's ``exp(log_scales)``,
relative to the parent face's size), new Gaussians inherit their parent's ``binding`` face, split
children are sampled in the parent face's frame (:mod:`.ops`), and pruning never leaves a face that had
Gaussians without one.  Its thresholds are the fields of
:class:`~talksplat.fitting.strategy.config.BindingStrategyConfig` (``talksplat fit --strategy.*``),
which it extends with what depends on the fit (``refine_stop_iter``, ``budget``).

Typical use (one rendered frame per step, seen by C cameras in one call, the loss the mean over the C
images; the trainer owns the optimizers)::

    strategy = BindingStrategyConfig().build(steps=n_steps, budget=100_000)   # or BindingStrategy(...)
    optimizers = {name: torch.optim.Adam([getattr(avatar, name)], lr=...) for name in PARAM_NAMES}
    strategy.check_sanity(avatar, optimizers)
    state = strategy.initialize_state()
    for step in range(n_steps):
        colors, alphas, metas = render_avatar(avatar, rig, params, viewmats, Ks, W, H)
        info = metas[0]                                   # ONE frame's meta (C cameras)
        strategy.step_pre_backward(avatar, optimizers, state, step, info)
        loss = ...; loss.backward()
        for opt in optimizers.values(): opt.step(); opt.zero_grad(set_to_none=True)
        strategy.step_post_backward(avatar, optimizers, state, step, info)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import torch
from torch import Tensor

from talksplat.avatar.gaussians import PARAM_NAMES, GaussianAvatar

from .config import BindingStrategyConfig
from .ops import duplicate, remove, reset_opa, split

__all__ = ["BindingStrategy", "keep_one_per_face"]

Info = Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]


@dataclass
class BindingStrategy(BindingStrategyConfig):
    """Clone / split / prune / opacity-reset for triangle-bound Gaussians.

    Statistics: after each backward, for every Gaussian visible in a camera (all radii > 0) the
    norm of its 2D mean gradient, normalised as gsplat does (``grad * [W/2, H/2] * n_cameras``:
    d loss / d NDC position, undoing a mean over cameras; also ``* B`` when a list of B frame
    metas is passed), is summed in ``state["grad2d"]`` [N] and the
    visibility in ``state["count"]`` [N]; both restart after every refinement.

    Every ``refine_every`` steps with ``refine_start_iter < step < refine_stop_iter``:

    * grow Gaussians whose mean normalised gradient exceeds ``grow_grad2d``: clone those whose
      largest scale is ``<= grow_scale_face`` face units, split the others into two.  Each
      candidate adds one Gaussian; at most ``budget - N`` are taken (largest gradients first);
    * prune Gaussians with opacity ``< prune_opa`` or (once ``step > reset_every``) largest scale
      ``> prune_scale_face`` face units.  A face whose Gaussians would all go keeps its
      most opaque one.

    Every ``reset_every`` steps (``0 < step < refine_stop_iter``): opacities are clamped to
    ``2 * prune_opa`` and the opacity optimizer's moments are zeroed.

    The thresholds and periods (``prune_opa``, ``grow_grad2d``, ``grow_scale_face``,
    ``prune_scale_face``, ``refine_start_iter``, ``refine_every``, ``reset_every``,
    ``pause_refine_after_reset``) are the fields of :class:`BindingStrategyConfig`, documented there
    and defaulted there only; ``refine_stop_fraction`` is what ``BindingStrategyConfig.build`` turns into
    ``refine_stop_iter`` (the hooks read ``refine_stop_iter``).  ``grow_scale_face``: a Gaussian covering
    its whole face is ~0.5-1 face units (``init_avatar`` with ``per_face=2`` gives ~0.45, ``per_face=1``
    ~0.65).  With ``absgrad`` use a larger ``grow_grad2d`` (gsplat suggests ~0.0008).

    Args (besides the config's):
        refine_stop_iter: refinement runs for steps strictly between ``refine_start_iter`` and it;
            opacity resets stop there too.
        budget: maximum number of Gaussians growth may reach (pruning happens after growth).
        absgrad: accumulate ``info["means2d"].absgrad`` instead of ``.grad`` (render with
            ``absgrad=True``).
        verbose: print counts at each refinement / reset (on stderr: diagnostics, not output).

    Scale thresholds are multiplied by ``state["scene_scale"]`` (``initialize_state``; keep 1.0:
    face units are already relative to the mesh).
    """

    refine_stop_iter: int = 15_000
    budget: int = 100_000
    absgrad: bool = False
    verbose: bool = False

    # ---------------------------------------------------------------- hooks

    def initialize_state(self, scene_scale: float = 1.0) -> Dict[str, Any]:
        """The running state to pass to the hooks.

        Keys: ``grad2d`` [N] float (sum of normalised gradient norms; created on the first
        ``step_post_backward`` on the avatar's device), ``count`` [N] float (visibility count),
        ``scene_scale`` (multiplies the face-unit scale thresholds), ``last`` (counts of the last
        refinement: dict with step, cloned, split, pruned, rescued, capped, n; None before),
        ``last_reset`` (step of the last opacity reset or None).
        """
        return {"grad2d": None, "count": None, "scene_scale": float(scene_scale), "last": None, "last_reset": None}

    def check_sanity(self, avatar: GaussianAvatar, optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
        """Check that ``optimizers`` holds one optimizer per trainable avatar parameter.

        Raises:
            ValueError: a trainable parameter of :data:`PARAM_NAMES` has no optimizer, an
                optimizer is keyed by an unknown name, an optimizer has more than one param group
                or tensor, or its tensor is not the avatar's current parameter.
        """
        if not isinstance(avatar, GaussianAvatar):
            raise ValueError(f"BindingStrategy needs a GaussianAvatar, got {type(avatar).__name__}")
        trainable = {name for name in PARAM_NAMES if getattr(avatar, name).requires_grad}
        missing = sorted(trainable - set(optimizers))
        if missing:
            raise ValueError(f"no optimizer for trainable avatar parameter(s) {missing}; "
                             f"expected one optimizer per name in {list(PARAM_NAMES)}")
        unknown = sorted(set(optimizers) - set(PARAM_NAMES))
        if unknown:
            raise ValueError(f"optimizers for unknown parameter(s) {unknown}; expected names in {list(PARAM_NAMES)}")
        for name, opt in optimizers.items():
            if len(opt.param_groups) != 1 or len(opt.param_groups[0]["params"]) != 1:
                raise ValueError(f"optimizer '{name}' must have exactly one param group holding one tensor, "
                                 f"got {[len(g['params']) for g in opt.param_groups]}")
            if opt.param_groups[0]["params"][0] is not getattr(avatar, name):
                raise ValueError(f"optimizer '{name}' does not hold the avatar's current '{name}' parameter")
        if avatar.binding.shape != (avatar.num_gaussians,):
            raise ValueError(f"avatar.binding has shape {tuple(avatar.binding.shape)}, expected [N]")

    def step_pre_backward(self, avatar: GaussianAvatar, optimizers: Mapping[str, torch.optim.Optimizer],
                          state: Dict[str, Any], step: int, info: Info) -> None:
        """Before ``loss.backward()``: ``retain_grad()`` on ``info["means2d"]`` [C, N, 2] pixels.

        ``info`` is the rasterizer meta of one rendered frame (or a list of metas, one per frame).
        """
        for meta in _as_list(info):
            if "means2d" not in meta:
                raise KeyError("rasterization meta has no 'means2d'; pass the meta returned by rasterization()")
            if meta["means2d"].requires_grad:
                meta["means2d"].retain_grad()

    def step_post_backward(self, avatar: GaussianAvatar, optimizers: Mapping[str, torch.optim.Optimizer],
                           state: Dict[str, Any], step: int, info: Info, packed: bool = False) -> None:
        """After ``loss.backward()``: accumulate statistics, refine and reset opacities when due.

        Args:
            info: the rasterizer meta of the frame rendered this step (``meta["means2d"]``
                [C, N, 2] with ``.grad`` (or ``.absgrad``) set, ``radii`` [C, N, 2], ``width``,
                ``height``, ``n_cameras``), or a list of B such metas (B frames rendered in one
                step, e.g. ``render_avatar``'s ``metas``; each is accumulated, refinement runs
                once).  Gradients are multiplied by ``n_cameras`` (and by B for a list), which
                undoes the 1/(B C) of a loss averaged over frames and cameras, as gsplat does.
            packed: gsplat packed metas (``gaussian_ids`` [nnz]); our rasterizer never packs.
        Returns nothing; the avatar, optimizers and ``state`` are updated in place.
        """
        if step >= self.refine_stop_iter:
            return
        metas = _as_list(info)
        for meta in metas:
            self._update_state(avatar, state, meta, packed=packed, n_frames=len(metas))

        if (step > self.refine_start_iter and step % self.refine_every == 0
                and step % self.reset_every >= self.pause_refine_after_reset):
            self.refine(avatar, optimizers, state, step)

        if step > 0 and step % self.reset_every == 0:
            reset_opa(avatar, optimizers, state, value=2.0 * self.prune_opa)
            state["last_reset"] = step
            if self.verbose:
                print(f"Step {step}: opacities reset to <= {2.0 * self.prune_opa:g}.", file=sys.stderr)

    # ---------------------------------------------------------------- internals

    def _update_state(self, avatar: GaussianAvatar, state: Dict[str, Any], info: Mapping[str, Any],
                      packed: bool = False, n_frames: int = 1) -> None:
        for key in ("width", "height", "n_cameras", "radii", "means2d"):
            if key not in info:
                raise KeyError(f"rasterization meta is missing '{key}'")
        m2 = info["means2d"]
        grads = getattr(m2, "absgrad", None) if self.absgrad else m2.grad
        if grads is None:
            what = "absgrad (render with absgrad=True)" if self.absgrad else "grad"
            raise RuntimeError(f"info['means2d'] has no {what}: call step_pre_backward before loss.backward() "
                               "and step_post_backward after it, with the meta of the frame that was rendered")
        grads = grads.detach().clone().float()
        grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"] * n_frames
        grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"] * n_frames

        n = avatar.num_gaussians
        dev = avatar.binding.device
        if state.get("grad2d") is None:
            state["grad2d"] = torch.zeros(n, device=dev)
        if state.get("count") is None:
            state["count"] = torch.zeros(n, device=dev)
        if state["grad2d"].shape[0] != n:
            raise RuntimeError(f"strategy state tracks {state['grad2d'].shape[0]} Gaussians but the avatar has {n}; "
                               "change the avatar only through the strategy (or start a new state)")

        if packed:
            gs_ids = info["gaussian_ids"].to(dev)  # [nnz]
            state["grad2d"].index_add_(0, gs_ids, grads.norm(dim=-1).to(dev))
            state["count"].index_add_(0, gs_ids, torch.ones(gs_ids.shape[0], device=dev))
            return
        if grads.shape[-2] != n:
            raise RuntimeError(f"meta['means2d'] covers {grads.shape[-2]} Gaussians but the avatar has {n}: "
                               "pass the meta of this step's render")
        # dense over [C, N] (no nonzero(): no host sync per step on a GPU)
        sel = (info["radii"] > 0).all(dim=-1)  # [C, N]
        norms = torch.where(sel, grads.norm(dim=-1), torch.zeros((), device=grads.device))
        state["grad2d"] += norms.sum(dim=0).to(dev)
        state["count"] += sel.sum(dim=0).to(dev, torch.float32)

    @torch.no_grad()
    def refine(self, avatar: GaussianAvatar, optimizers: Mapping[str, torch.optim.Optimizer],
               state: Dict[str, Any], step: int) -> Dict[str, int]:
        """Grow, then prune, then restart the statistics. Returns (and stores in
        ``state["last"]``) the counts: step, cloned, split, pruned, rescued (Gaussians kept so
        that their face is not left empty), capped (candidates dropped by the budget), n."""
        n0 = avatar.num_gaussians
        if state.get("grad2d") is None:
            state["grad2d"] = torch.zeros(n0, device=avatar.binding.device)
            state["count"] = torch.zeros(n0, device=avatar.binding.device)
        n_clone, n_split, n_capped = self._grow(avatar, optimizers, state)
        if self.verbose:
            print(f"Step {step}: {n_clone} Gaussians cloned, {n_split} split"
                  + (f" ({n_capped} more dropped by the budget)" if n_capped else "")
                  + f". Now {avatar.num_gaussians}.", file=sys.stderr)
        n_prune, n_rescued = self._prune(avatar, optimizers, state, step)
        if self.verbose:
            print(f"Step {step}: {n_prune} Gaussians pruned ({n_rescued} kept so no face is empty). "
                  f"Now {avatar.num_gaussians}.", file=sys.stderr)
        state["grad2d"] = torch.zeros(avatar.num_gaussians, device=avatar.binding.device)
        state["count"] = torch.zeros(avatar.num_gaussians, device=avatar.binding.device)
        last = {"step": int(step), "cloned": n_clone, "split": n_split, "pruned": n_prune, "rescued": n_rescued,
                "capped": n_capped, "n": avatar.num_gaussians}
        state["last"] = last
        return last

    def _max_scale(self, avatar: GaussianAvatar) -> Tensor:
        """[N] largest scale, face units."""
        return torch.exp(avatar.log_scales.detach()).max(dim=-1).values

    @torch.no_grad()
    def _grow(self, avatar: GaussianAvatar, optimizers: Mapping[str, torch.optim.Optimizer],
              state: Dict[str, Any]) -> Tuple[int, int, int]:
        grads = state["grad2d"] / state["count"].clamp_min(1)  # [N]
        is_grad_high = grads > self.grow_grad2d
        n_cand = int(is_grad_high.sum())
        room = max(int(self.budget) - avatar.num_gaussians, 0)  # each candidate adds one Gaussian
        n_capped = 0
        if n_cand > room:
            keep = torch.zeros_like(is_grad_high)
            if room > 0:
                top = torch.topk(torch.where(is_grad_high, grads, torch.full_like(grads, -1.0)), room).indices
                keep[top] = True
            is_grad_high = is_grad_high & keep
            n_capped = n_cand - int(is_grad_high.sum())

        is_small = self._max_scale(avatar) <= self.grow_scale_face * state["scene_scale"]
        is_dupli = is_grad_high & is_small
        is_split = is_grad_high & ~is_small
        n_dupli = int(is_dupli.sum())
        n_split = int(is_split.sum())
        if n_dupli > 0:
            duplicate(avatar, optimizers, state, is_dupli)
        # clones are not split
        is_split = torch.cat([is_split, torch.zeros(n_dupli, dtype=torch.bool, device=is_split.device)])
        if n_split > 0:
            split(avatar, optimizers, state, is_split)
        return n_dupli, n_split, n_capped

    @torch.no_grad()
    def _prune(self, avatar: GaussianAvatar, optimizers: Mapping[str, torch.optim.Optimizer],
               state: Dict[str, Any], step: int) -> Tuple[int, int]:
        opac = torch.sigmoid(avatar.opacity_logits.detach())
        is_prune = opac < self.prune_opa
        if step > self.reset_every:
            is_prune |= self._max_scale(avatar) > self.prune_scale_face * state["scene_scale"]
        if not bool(is_prune.any()):
            return 0, 0
        rescue = keep_one_per_face(avatar.binding, opac, ~is_prune)
        is_prune &= ~rescue
        n_prune = int(is_prune.sum())
        if n_prune > 0:
            remove(avatar, optimizers, state, is_prune)
        return n_prune, int(rescue.sum())


def keep_one_per_face(binding: Tensor, score: Tensor, kept: Tensor) -> Tensor:
    """Gaussians to rescue so that every face with a Gaussian keeps one.

    Args:
        binding: [N] int64 parent face. score: [N] (e.g. opacity; the highest is rescued).
        kept: [N] bool, Gaussians that survive anyway.
    Returns:
        [N] bool: for each face with Gaussians but none kept, its highest-score Gaussian.
    """
    out = torch.zeros_like(kept)
    if binding.numel() == 0:
        return out
    n_faces = int(binding.max()) + 1
    n_kept = torch.bincount(binding[kept], minlength=n_faces)
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(binding[order], stable=True)]  # by face, then score descending
    b = binding[order]
    first = torch.ones_like(b, dtype=torch.bool)
    first[1:] = b[1:] != b[:-1]
    best = order[first]  # [faces present] the best Gaussian of each face
    out[best[n_kept[binding[best]] == 0]] = True
    return out


def _as_list(info: Info) -> List[Mapping[str, Any]]:
    if isinstance(info, Mapping):
        return [info]
    return list(info)
