"""External mode: a user's own ``train.py`` tuned by restarts from its checkpoints.

The supervisor starts ``python -m smart_tuner.actors.external.worker`` where it would start
our trainer's worker; that process speaks the worker protocol, drives the user's script
and watches its logs with the watcher's sources. It has nothing of our model.

* ``hparams``: the hyperparameters typed by the script's declared values and rendered
  as it takes them (NVIDIA's ``--hparams`` string, flags, a JSON/YAML file);
* ``checkpoints``: the script's checkpoints by step, and whether one is complete (a torch
  zip whose members all check, or a file unchanged for a while);
* ``script``: the script's command line and process (own group, console log, the stop in
  steps SIGINT, SIGTERM, SIGKILL);
* ``worker``: the worker itself: one run of the script per segment, its readings out as
  ``MetricsObserved``, the segment's end or failure; and the command line ``main``.
"""
