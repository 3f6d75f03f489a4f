"""External mode: a user's own ``train.py`` tuned by restarts from its checkpoints.

The supervisor starts ``python -m smart_tuner.actors.external.worker`` where it would start
our trainer's worker; that process speaks the worker protocol, drives the user's script
and watches its logs with the watcher's sources. It has nothing of our model.
"""
