"""talksplat.data_prep — see docs/architecture.md (built by a later issue)."""
