"""Training HI-Diff: configuration, objectives, optimizer and schedule, resumable data stream,
checkpoints, distributed helpers. The loop and CLI live in :mod:`hidiff.train`.

- :mod:`hidiff.training.config`: RunConfig (model / data / train), from our YAML or official option files
- :mod:`hidiff.training.stages`: the stage-1 and stage-2 objectives
- :mod:`hidiff.training.optim`: AdamW and CosineAnnealingRestartCyclicLR
- :mod:`hidiff.training.data`: the deterministic, resumable batch stream (folders or synthetic blur)
- :mod:`hidiff.training.checkpointing`: full-resume checkpoints
- :mod:`hidiff.training.distributed`: torchrun / DDP helpers
- :mod:`hidiff.training.validate`, :mod:`hidiff.training.weights`, :mod:`hidiff.training.log`
"""
