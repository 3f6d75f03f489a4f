"""Smart Tuner's wire protocol: envelope, message types, msgpack codec and validation.

Pure: imports the standard library and msgpack only; no I/O.
"""

from . import messages
from .codec import DEFAULT_LIMITS, decode, encode, unpack
from .envelope import ENVELOPE_VERSION, Envelope
from .errors import ProtocolError
from .registry import Message, MessageSpec, all_specs, spec_for, to_data, upcaster
from .schema import Json, Limits

__all__ = [
    "DEFAULT_LIMITS",
    "ENVELOPE_VERSION",
    "Envelope",
    "Json",
    "Limits",
    "Message",
    "MessageSpec",
    "ProtocolError",
    "all_specs",
    "decode",
    "encode",
    "messages",
    "spec_for",
    "to_data",
    "unpack",
    "upcaster",
]
