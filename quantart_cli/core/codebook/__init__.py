"""Codebook statistics and pictures (what ``inspect-codebook`` reports)."""
