"""Training frames streamed from a talksplat dataset, with a bounded in-memory cache.

A fit step trains on one time step: :meth:`FrameSampler.sample_views` draws it and loads the image of
every camera that saw it (:class:`Views`, C images); :meth:`FrameSampler.sample` draws one image
(``--cameras-per-step 1``, and held-out evaluation loads images one at a time).

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
from talksplat.data_prep.plate import resize_to


@dataclass
class Sample:
    """One training image.

    image: [H, W, 3] float in [0, 1] (not yet composited); mask: [H, W] float in [0, 1];
    viewmat: [4, 4] world-to-camera; K: [3, 3] px; timestep: int; landmarks: [478, 2] px or None;
    plate: [H, W, 3] float in [0, 1], the dataset's plate seen by this image's camera (None without a plate).
    """

    frame: Frame
    image: torch.Tensor
    mask: torch.Tensor
    viewmat: torch.Tensor
    K: torch.Tensor
    timestep: int
    landmarks: np.ndarray | None
    plate: torch.Tensor | None = None

    def composite(self, background: torch.Tensor) -> torch.Tensor:
        """[H, W, 3]: the foreground over `background` [3]."""
        m = self.mask[..., None]
        return self.image * m + background * (1 - m)


@dataclass
class Views:
    """The images of one time step, one per camera (C >= 1, in dataset order), all of one size.

    Rendered together in one rasterization call: :meth:`viewmats` [C, 4, 4], :meth:`Ks` [C, 3, 3],
    :meth:`composite` [C, H, W, 3].
    """

    samples: list[Sample]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("Views needs at least one image")
        sizes = {(s.frame.width, s.frame.height) for s in self.samples}
        steps = {s.timestep for s in self.samples}
        if len(sizes) != 1 or len(steps) != 1:
            raise ValueError(f"Views holds images of one time step and one size, got time steps {sorted(steps)} "
                             f"and sizes {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def timestep(self) -> int:
        return self.samples[0].timestep

    @property
    def width(self) -> int:
        """Image width, px (the same for every camera)."""
        return self.samples[0].frame.width

    @property
    def height(self) -> int:
        """Image height, px."""
        return self.samples[0].frame.height

    def viewmats(self) -> torch.Tensor:
        """[C, 4, 4] world-to-camera (OpenCV)."""
        return torch.stack([s.viewmat for s in self.samples])

    def Ks(self) -> torch.Tensor:
        """[C, 3, 3] intrinsics, px."""
        return torch.stack([s.K for s in self.samples])

    def composite(self, background: torch.Tensor) -> torch.Tensor:
        """[C, H, W, 3]: each camera's foreground over `background` [3] (each with its own mask)."""
        return torch.stack([s.composite(background) for s in self.samples])

    @property
    def image(self) -> torch.Tensor:
        """[C, H, W, 3] the images as they are (the targets of a fit over the plate)."""
        return torch.stack([s.image for s in self.samples])

    @property
    def plate(self) -> torch.Tensor | None:
        """[C, H, W, 3] the plate seen by each camera, or None (without a plate)."""
        return None if self.samples[0].plate is None else torch.stack([s.plate for s in self.samples])


class FrameCache:
    """LRU cache of decoded (image, mask) uint8 arrays, capped at `max_bytes`; with ``plate`` (the dataset's
    plate, [H, W, 3] uint8) also each image's view of the plate (:meth:`plate_view`)."""

    def __init__(self, dataset: Dataset, max_bytes: int, plate: np.ndarray | None = None):
        self.dataset = dataset
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.hits = self.misses = 0
        self.plate = plate
        self._plate_views: OrderedDict[int, np.ndarray] = OrderedDict()

    def plate_view(self, index: int) -> np.ndarray:
        """[H, W, 3] uint8: the plate seen by image ``index``'s camera (a crop of the source frame's camera)."""
        from talksplat.data_prep.plate import warp_view

        hit = self._plate_views.get(index)
        if hit is None:
            fr, sf = self.dataset.frames[index], self.dataset.source_frame
            hit = warp_view(self.plate, sf.K, fr.K, fr.width, fr.height)
            if (len(self._plate_views) + 1) * hit.nbytes <= self.max_bytes // 2:
                self._plate_views[index] = hit
        return hit

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
    """Random training images from a split of the dataset: one time step with all its cameras
    (:meth:`sample_views`), or one image (time step and camera, :meth:`sample`).

    Both draw one integer from the same seeded generator; for a monocular dataset (one image per time
    step) they draw the same images in the same order.  Its state (:meth:`state`) is that generator's.
    """

    def __init__(self, dataset: Dataset, split: str = "train", cache_mb: int = 1024, seed: int = 0,
                 device: torch.device | str = "cpu", plate: np.ndarray | None = None):
        steps = set(dataset.split[split])
        self.indices = [i for i, f in enumerate(dataset.frames) if f.timestep in steps]
        if not self.indices:
            raise ValueError(f"{dataset.root}: no images in the '{split}' split")
        # frame indices per time step of the split, time steps in the order of their first image
        groups: dict[int, list[int]] = {}
        for i in self.indices:
            groups.setdefault(dataset.frames[i].timestep, []).append(i)
        self.timesteps: list[list[int]] = list(groups.values())
        self.dataset = dataset
        self.cache = FrameCache(dataset, cache_mb * 2 ** 20, plate)
        self.rng = np.random.default_rng(seed)
        self.device = torch.device(device)
        cams = list(dataset.landmarks.get("cameras", []))
        self._cam_index = {str(c): i for i, c in enumerate(cams)}
        self._device_frames: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._device_bytes = 0

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self) -> Sample:
        """One random image of the split (uniform over images)."""
        return self.load(self.indices[int(self.rng.integers(len(self.indices)))])

    def sample_views(self) -> Views:
        """One random time step of the split (uniform over time steps) with the image of each of its cameras;
        the caller checks that the images share one size (:meth:`mixed_sizes`)."""
        group = self.timesteps[int(self.rng.integers(len(self.timesteps)))]
        return Views([self.load(i) for i in group])

    def mixed_sizes(self) -> dict[str, tuple[int, int]] | None:
        """The first time step of the split whose images differ in size, as {camera: (width, height) px}; None
        when every time step's images share one size (so :meth:`sample_views` can be rendered in one call)."""
        for group in self.timesteps:
            sizes = {self.dataset.frames[i].camera: (self.dataset.frames[i].width, self.dataset.frames[i].height)
                     for i in group}
            if len(set(sizes.values())) > 1:
                return sizes
        return None

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
        plate = None
        if self.cache.plate is not None:
            plate = torch.from_numpy(self.cache.plate_view(index)).to(dev).float() / 255.0
        return Sample(frame=fr, image=img.float() / 255.0, mask=mask.float() / 255.0,
                      viewmat=torch.as_tensor(fr.viewmat, dtype=torch.float32, device=dev),
                      K=torch.as_tensor(fr.K, dtype=torch.float32, device=dev), timestep=fr.timestep, landmarks=lm,
                      plate=plate)

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


class WholeFrames:
    """The whole source frames of a monocular dataset's training steps (what `talksplat prep` kept, with their
    person masks), at most ``max_side`` px on their longer side: the torso's whole-frame supervision.

    :meth:`sample` draws one (seeded) as a :class:`Sample` whose ``plate`` is the dataset's plate at that size
    and whose camera is the source frame's (``K`` scaled).  Decoded frames are kept up to ``cache_mb``.
    """

    def __init__(self, dataset: Dataset, plate: np.ndarray, max_side: int, seed: int = 0,
                 device: torch.device | str = "cpu", cache_mb: int = 256):
        from talksplat.data_prep.plate import scale_intrinsics

        sf = dataset.source_frame
        train = set(dataset.split.get("train", []))
        self.timesteps = sorted(t for t in sf.masks if t in train and t in sf.frames) if sf is not None else []
        if not self.timesteps:
            raise ValueError(f"{dataset.root}: no whole training frames (prepare the video again with this "
                             "version of `talksplat prep`, --source-frames above 0)")
        s = min(1.0, max_side / max(sf.width, sf.height))
        self.width, self.height = max(2, int(round(sf.width * s))), max(2, int(round(sf.height * s)))
        K = scale_intrinsics(sf.K, self.width / sf.width, self.height / sf.height)
        self.K = torch.as_tensor(K, dtype=torch.float32, device=device)
        self.viewmat = torch.as_tensor(sf.viewmat, dtype=torch.float32, device=device)
        self.c2w = np.asarray(sf.c2w)
        self.dataset, self.device = dataset, torch.device(device)
        self.plate = self._to_device(resize_to(plate, self.width, self.height))
        self.rng = np.random.default_rng(seed + 7919)
        self.max_bytes, self.bytes = cache_mb * 2 ** 20, 0
        self._items: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _to_device(self, img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(img)).to(self.device).float() / 255.0

    def load(self, t: int) -> Sample:
        """Time step ``t``'s whole frame as a :class:`Sample` (image [H, W, 3], mask [H, W], plate [H, W, 3])."""
        hit = self._items.get(t)
        if hit is None:
            img = resize_to(self.dataset.load_source_frame(t), self.width, self.height)
            mask = resize_to((self.dataset.load_source_mask(t) * 255).astype(np.uint8), self.width, self.height)
            hit = (img, mask)
            if self.bytes + img.nbytes + mask.nbytes <= self.max_bytes:
                self._items[t] = hit
                self.bytes += img.nbytes + mask.nbytes
        img, mask = hit
        frame = Frame(image=f"frames/cam0/{t:05d}.png", mask=None, K=self.K.cpu().numpy().astype(np.float64),
                      c2w=self.c2w, timestep=t, camera="cam0", width=self.width, height=self.height)
        return Sample(frame=frame, image=self._to_device(img), mask=self._to_device(mask), viewmat=self.viewmat,
                      K=self.K, timestep=t, landmarks=None, plate=self.plate)

    def sample(self) -> Sample:
        """A random training step's whole frame."""
        return self.load(self.timesteps[int(self.rng.integers(len(self.timesteps)))])
