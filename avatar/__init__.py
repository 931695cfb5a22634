"""Gaussian avatars bound to the triangles of a head rig: binding frames, initialisation, files."""

from .binding import face_frames
from .gaussians import GaussianAvatar, WorldGaussians
from .init import init_avatar
from .io import AvatarFileError, load_avatar, read_header, save_avatar

__all__ = ["GaussianAvatar", "WorldGaussians", "face_frames", "init_avatar", "load_avatar", "save_avatar",
           "read_header", "AvatarFileError"]


def __getattr__(name):  # render_avatar imports the rasterizer lazily
    if name == "render_avatar":
        from .render import render_avatar

        return render_avatar
    raise AttributeError(name)
