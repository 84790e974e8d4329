"""Training: the shared loop and one step function per stage."""
