"""Training losses: perceptual (LPIPS), adversarial (hinge, adaptive weight)."""
