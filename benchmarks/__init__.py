"""Benchmarks runnable from the CLI (`talksplat bench ...`)."""
