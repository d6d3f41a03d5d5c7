"""Training: the run's loop, pure jitted steps, augmentation, optimiser, sharding, checkpoints."""
