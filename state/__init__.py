"""The event log and its projections: journal, reducers, replay, snapshots,
``tuner_state.yaml``, and the configuration schema.

Reducers are pure; storage sees bytes, never domain types.
"""
