"""The library: models, kernels, losses, training, data, files and stylization. Torch lives here; Typer,
rich, platformdirs and the shell never do (``lint-imports`` checks it, transitively)."""
