"""Files: images, checkpoints (native, safetensors, the original releases), code-index files, atomic writes."""
