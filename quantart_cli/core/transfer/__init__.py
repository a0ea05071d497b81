"""Stylizing images with a trained model: the engine (fidelity knobs, colour preservation) and exact tiling."""
