"""Training frames streamed from a talksplat dataset, with a bounded in-memory cache.

Images and masks are read from disk on demand (PNG decode is a few milliseconds, much less than a
training step) and kept in an LRU cache capped in bytes, so host memory stays bounded whatever the
length of the video.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from talksplat.data_prep.dataset import Dataset, Frame


@dataclass
class Sample:
    """One training image.

    image: [H, W, 3] float in [0, 1] (not yet composited); mask: [H, W] float in [0, 1];
    viewmat: [4, 4] world-to-camera; K: [3, 3] px; timestep: int; landmarks: [478, 2] px or None.
    """

    frame: Frame
    image: torch.Tensor
    mask: torch.Tensor
    viewmat: torch.Tensor
    K: torch.Tensor
    timestep: int
    landmarks: np.ndarray | None

    def composite(self, background: torch.Tensor) -> torch.Tensor:
        """[H, W, 3]: the foreground over `background` [3]."""
        m = self.mask[..., None]
        return self.image * m + background * (1 - m)


class FrameCache:
    """LRU cache of decoded (image, mask) uint8 arrays, capped at `max_bytes`."""

    def __init__(self, dataset: Dataset, max_bytes: int):
        self.dataset = dataset
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index in self._items:
            self._items.move_to_end(index)
            self.hits += 1
            return self._items[index]
        self.misses += 1
        fr = self.dataset.frames[index]
        img = self.dataset.load_image(fr)
        mask = self.dataset.load_mask(fr)
        if mask is None:
            mask = np.full(img.shape[:2], 255, np.uint8)
        size = img.nbytes + mask.nbytes
        if size <= self.max_bytes:
            self._items[index] = (img, mask)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (a, b) = self._items.popitem(last=False)
                self.bytes -= a.nbytes + b.nbytes
        return img, mask


class FrameSampler:
    """Random training frames (time step and camera) from a split of the dataset."""

    def __init__(self, dataset: Dataset, split: str = "train", cache_mb: int = 1024, seed: int = 0,
                 device: torch.device | str = "cpu"):
        steps = set(dataset.split[split])
        self.indices = [i for i, f in enumerate(dataset.frames) if f.timestep in steps]
        if not self.indices:
            raise ValueError(f"{dataset.root}: no images in the '{split}' split")
        self.dataset = dataset
        self.cache = FrameCache(dataset, cache_mb * 2 ** 20)
        self.rng = np.random.default_rng(seed)
        self.device = torch.device(device)
        cams = list(dataset.landmarks.get("cameras", []))
        self._cam_index = {str(c): i for i, c in enumerate(cams)}
        self._device_frames: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._device_bytes = 0

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self) -> Sample:
        return self.load(self.indices[int(self.rng.integers(len(self.indices)))])

    def load(self, index: int) -> Sample:
        fr = self.dataset.frames[index]
        img, mask = self.cache.get(index)
        dev = self.device
        lm = None
        pts = self.dataset.landmarks.get("points")
        if pts is not None and fr.camera in self._cam_index:
            c = self._cam_index[fr.camera]
            if self.dataset.landmarks["confidence"][c, fr.timestep] > 0:
                lm = pts[c, fr.timestep]
        if dev.type == "cuda":
            img, mask = self._on_device(index, img, mask)
        else:
            img, mask = torch.from_numpy(img), torch.from_numpy(mask)
        return Sample(frame=fr, image=img.float() / 255.0, mask=mask.float() / 255.0,
                      viewmat=torch.as_tensor(fr.viewmat, dtype=torch.float32, device=dev),
                      K=torch.as_tensor(fr.K, dtype=torch.float32, device=dev), timestep=fr.timestep, landmarks=lm)

    def _on_device(self, index: int, img: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame as uint8 tensors on the GPU, uploaded once while they fit in the cache's byte budget
        (no host-to-device copy per step)."""
        hit = self._device_frames.get(index)
        if hit is not None:
            return hit
        pair = (torch.from_numpy(img).to(self.device), torch.from_numpy(mask).to(self.device))
        size = img.nbytes + mask.nbytes
        if self._device_bytes + size <= self.cache.max_bytes:
            self._device_frames[index] = pair
            self._device_bytes += size
        return pair

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state(self, st: dict) -> None:
        self.rng.bit_generator.state = st["rng"]
