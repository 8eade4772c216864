"""The one error type of the wire protocol."""


class WireError(ValueError):
    """A message, topic or identifier that breaks the protocol; the text says what is wrong.

    Decoders raise only this, whatever the input bytes, so a bridge can drop one
    bad message with a single ``except WireError`` and carry on.
    """
