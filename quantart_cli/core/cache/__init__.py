"""Stage 2's latent cache: frozen encoders run once, training reads latents."""
