"""Who may connect and what each role may do: tokens, principals, the audit log.

A tokens file is YAML, a list of ``{name, role, token}``::

    - {name: alice, role: operator, token: 6f1c...}
    - {name: trainer-1, role: trainer, token: 93ab...}

Tokens are kept only as SHA-256 digests and compared in constant time. A client presents its
token as ``Authorization: Bearer TOKEN``; a browser, which cannot set headers on a WebSocket,
offers ``bearer.TOKEN`` as a second subprotocol (see ``docs/protocol.md``). Neither the header nor
the subprotocol list is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from scenes.errors import ConfigError, Problem
from scenes.yamlpos import YamlSyntaxError, format_path, load

from .protocol import BEARER_SUBPROTOCOL_PREFIX, Role

#: Smallest token length accepted in a tokens file (characters).
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """An authenticated client: the token's ``name`` and its ``role``."""

    name: str
    role: Role


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenBook:
    """The tokens a server accepts."""

    def __init__(self, entries: Mapping[str, Principal] | None = None) -> None:
        self._by_digest: dict[bytes, Principal] = {}
        for token, principal in (entries or {}).items():
            self.add(token, principal)

    def add(self, token: str, principal: Principal) -> None:
        self._by_digest[_digest(token)] = principal

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal of ``token``, or None. Constant time in the token's content."""
        if not token:
            return None
        d = _digest(token)
        found = None
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, d):
                found = principal
        return found

    @classmethod
    def generated(cls, name: str = "admin", role: Role = Role.ADMIN) -> tuple[TokenBook, str]:
        """A book with one fresh random token (returned, to be shown to the user once)."""
        token = secrets.token_urlsafe(24)
        return cls({token: Principal(name=name, role=role)}), token

    @classmethod
    def load(cls, path: str | Path) -> TokenBook:
        """Read a tokens file; raises ``ConfigError`` naming the file, line and field."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read tokens file: {exc.strerror}") from exc
        try:
            doc = load(text)
        except YamlSyntaxError as exc:
            raise ConfigError(
                str(Problem(file=str(path), line=exc.line, path="", message=exc.message))
            ) from exc
        problems: list[Problem] = []

        def bad(p: tuple[str | int, ...], message: str) -> None:
            problems.append(
                Problem(file=str(path), line=doc.line(p), path=format_path(p), message=message)
            )

        if not isinstance(doc.value, list) or not doc.value:
            bad((), "a tokens file is a non-empty list of {name, role, token}")
            raise ConfigError("\n".join(map(str, problems)))
        book = cls()
        seen: set[str] = set()
        roles = ", ".join(r.value for r in Role)
        for i, item in enumerate(doc.value):
            if not isinstance(item, dict):
                bad((i,), "must be a map with name, role and token")
                continue
            for key in sorted(set(item) - {"name", "role", "token"}):
                bad((i, key), "unknown field (allowed: name, role, token)")
            name, role, token = item.get("name"), item.get("role"), item.get("token")
            if not isinstance(name, str) or not name:
                bad((i, "name"), "required, a non-empty string")
            if role not in {r.value for r in Role}:
                bad((i, "role"), f"required, one of: {roles}")
            if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
                bad((i, "token"), f"required, a string of at least {MIN_TOKEN_LENGTH} characters")
            elif not all(c.isalnum() or c in "-_." for c in token):
                bad((i, "token"), "may hold only letters, digits, '-', '_' and '.'")
            elif token in seen:
                bad((i, "token"), "the same token is given twice")
            else:
                seen.add(token)
                if isinstance(name, str) and name and role in {r.value for r in Role}:
                    book.add(token, Principal(name=name, role=Role(role)))
        if problems:
            raise ConfigError("\n".join(map(str, problems)))
        return book


def token_from_headers(authorization: str | None, subprotocols: list[str]) -> str | None:
    """The token a handshake carries: ``Authorization: Bearer T`` or a ``bearer.T``
    subprotocol offer."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for p in subprotocols:
        if p.startswith(BEARER_SUBPROTOCOL_PREFIX) and len(p) > len(BEARER_SUBPROTOCOL_PREFIX):
            return p[len(BEARER_SUBPROTOCOL_PREFIX) :]
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One command, accepted or refused: who, with which role, what, when, and the result."""

    ts: float  # Unix seconds
    who: str
    role: str
    session: str
    command_id: str
    target: str
    action: str
    args: Mapping[str, Any]
    ok: bool
    code: str = ""
    reason: str = ""
    duplicate: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "ts": self.ts,
                "who": self.who,
                "role": self.role,
                "session": self.session,
                "id": self.command_id,
                "target": self.target,
                "action": self.action,
                "args": self.args,
                "ok": self.ok,
                "code": self.code,
                "reason": self.reason,
                "duplicate": self.duplicate,
            },
            default=repr,
            sort_keys=True,
        )


class AuditLog:
    """An append-only JSON-lines file, one :class:`AuditRecord` a line, flushed per record."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._f: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: AuditRecord) -> None:
        with self._lock:
            if self._f is None:
                raise ValueError("audit log is closed")
            self._f.write(record.to_json() + "\n")
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """Every record of an audit file (for tools and tests)."""
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
