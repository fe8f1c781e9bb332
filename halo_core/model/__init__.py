"""The network, its checkpoints and model registry, and the one inference loop that scores samples."""
