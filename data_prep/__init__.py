"""Video (monocular or calibrated multi-view, or a NeRF-style export) -> tracked dataset (`talksplat prep`).

docs/architecture.md says where each step lives; docs/formats.md describes the dataset.
"""
