"""Training core: config, in-RAM patch sampler, trainer with EMA/checkpoints/resume."""
