"""Named presets shipped with quantart: ``<stage>/<name>.toml`` (data files, found from a checkout or a wheel)."""
