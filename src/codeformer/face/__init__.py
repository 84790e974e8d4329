"""Face detection, alignment, paste-back and the whole-photo restoration pipeline."""
