"""talksplat: video of a talking person -> Gaussian head avatar rigged to a parametric head, driven by speech."""

__version__ = "0.1.0"
