"""Training: pure-torch steps and augmentation (``step``, ``augment``) apart from the Ray Train
worker (``worker``) and the lean trainer with its fence around private Ray names (``trainer``,
``ray_compat``)."""
