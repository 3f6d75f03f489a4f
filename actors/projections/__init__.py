"""Projections: what the committed events look like in the tools people use.

``projector`` (the actor that writes them, off the event loop), ``mlflow`` and
``tensorboard_writer`` (the run as MLflow and TensorBoard show it), ``optuna_mirror``
(a study for optuna-dashboard), ``terminal`` (the live view). Every projection is
derived from the log and may be rebuilt from it; none feeds a decision.
"""
