"""Training: the loop, its cadences, optimizers, the auto recipe, fine-tuning and the curve."""
