"""The bus: how actors, the sequencer, ``tail`` and workers talk.

``_base`` holds the contract and the gapless ``committed_events`` stream;
``inproc`` is the in-process implementation for unit tests; ``zmqbus`` the
ZeroMQ one (the only module in the project that imports zmq).
"""

from ._base import (
    Ack,
    BusClient,
    BusError,
    BusTimeout,
    LogReader,
    Proposal,
    ProposalRejected,
    SequencerPort,
    StreamStats,
    committed_events,
)
from .inproc import InprocHub

__all__ = [
    "Ack",
    "BusClient",
    "BusError",
    "BusTimeout",
    "InprocHub",
    "LogReader",
    "Proposal",
    "ProposalRejected",
    "SequencerPort",
    "StreamStats",
    "committed_events",
]
