"""Training: configuration, state and optimizer, the step, data parallelism, checkpoints, the
workdir, and the resumable run (`loop.fit`)."""
