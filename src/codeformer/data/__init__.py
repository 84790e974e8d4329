"""Image I/O, synthetic degradation and training datasets."""
