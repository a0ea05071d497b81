"""Finding images (files, folders, globs, lists, manifests), transforming them, and the training datasets."""
