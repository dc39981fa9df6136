"""Pieces of the training loop kept out of train.py: building the roles and the step's DistillConfig
(roles.py), reward placement across ranks (placement.py), checkpoints (checkpoint.py), metrics, trackers
and plots (metrics.py), validation (validation.py)."""
