"""Experiment tracking: every trial in TensorBoard, MLflow and W&B, live and after the fact.

fields.py says what a tracked trial holds (from the run's own tables, so live and after-the-fact
runs agree); tensorboard.py, mlflow.py and wandb.py each send it to one tracker, finding what is
there already so that sending twice duplicates nothing; check.py refuses a bad section before Ray
starts; send.py sends a run's tables (``cnnc track``, and at the end of every sweep); live.py is the
Tune callback that sends each epoch as it ends, on a thread, so a slow or dead tracker never holds
up training.
"""
