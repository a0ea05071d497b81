"""The CLI shell: the Typer app, the console, settings (fields, presets, resolution), plugin discovery, user
folders.

The only part of quantart that imports Typer, rich or platformdirs; it imports the core, never the other way
round."""
