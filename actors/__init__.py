"""Smart Tuner's actors and the host they run in.

At the top: the host (``coordinator``: one asyncio loop; ``sequencer``: the journal's only
writer; ``runtime``: the actor shell with supervision; ``rundir``) and the small actors
(``lifecycle``, ``guards``, ``stopper``, ``alerter``, and ``scheduler``, which the tuner
calls). One package per role: ``bus`` (how everything talks; the only zmq importer),
``tuner``, ``supervisor``, ``store``, ``watcher`` (metric sources for a user's logs),
``external`` (a user's ``train.py`` behind the worker protocol), ``projections`` (MLflow,
TensorBoard, Optuna, the terminal view) and ``cli``. docs/ARCHITECTURE.md has the map.

The coordinator never imports torch or the model.
"""
