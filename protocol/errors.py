"""The one error type of the protocol package.

Everything that can go wrong while decoding or validating a message raises
``ProtocolError`` with a message that names the offending part. Imports the
standard library only.
"""


class ProtocolError(ValueError):
    """Bad input on the wire: truncated, oversized, wrong type, unknown tag, wrong version."""
