"""Stylization measures and the photos x paintings evaluation grid."""
