"""Dataset -> fitted Gaussian avatar (`talksplat fit`): the training loop, losses, densification, evaluation.

docs/architecture.md says where each step lives.
"""
