"""Training objectives: the stage-1 VQGAN loss, the stage-2 style-transfer loss, their configs, LPIPS."""
