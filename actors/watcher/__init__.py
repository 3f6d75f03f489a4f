"""The watcher: metrics from wherever a training writes them, as canonical readings.

One module per idea: ``source`` (the ``MetricSource`` interface, ``Reading`` and the
canonical mapping), one module per kind of log (``tensorboard_source``,
``mlflow_source``, ``console_source``), ``filetail`` (what the file-based sources
share), ``layouts`` (the log layouts of the trainers people use; not hyperparameter
presets) and ``probe`` (``run_tuner.py probe``). Our own trainer needs no source: its
worker reports canonical names itself. For a user's own script the sources run inside
the external worker (``actors.external``), which turns their readings into
``MetricsObserved`` events for the segment it drives: that is where the watcher role
runs. Imports ``protocol`` and the standard library; never the tuner or torch.
"""
