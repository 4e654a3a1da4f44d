"""Training: the state and optimizer, the step, data parallelism, metrics logs, the plan of a
run (`plan`) and the resumable run itself (`loop.fit`). What a run is (config, workdir,
checkpoints) lives in `s2s_jax.run`."""
