"""The exceptions of the wire, two families as in h11: our misuse and the peer's.

    TwinError (scenes.errors)
    └── ProtocolError                  anything the wire raises on purpose
        ├── LocalProtocolError         this side used the protocol wrongly (a bug here)
        └── RemoteProtocolError        the peer sent something invalid; ``code`` says what
            └── AuthError              no valid credentials, or a forbidden origin

A :class:`RemoteProtocolError` never escapes the server core: it becomes an ``error`` message or a
close code for the one client that caused it (see ``docs/protocol.md``).
"""

from __future__ import annotations

from scenes.errors import TwinError

from .protocol import ErrorCode


class ProtocolError(TwinError):
    """Root of the wire's errors."""


class LocalProtocolError(ProtocolError):
    """This side broke the protocol (a programming error, not bad input)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid. ``code`` is the ``error`` message code it maps to."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(f"{code.value}: {reason}")
        self.code = code
        self.reason = reason


class AuthError(RemoteProtocolError):
    """Missing or invalid credentials, or an origin that is not allowed."""

    def __init__(self, reason: str, *, status: int = 401) -> None:
        super().__init__(ErrorCode.UNAUTHORIZED, reason)
        self.status = status
