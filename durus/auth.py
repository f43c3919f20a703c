"""Shared-secret authentication for client/server connections (an extension of protocol 1).

Owns reading a secret file (refusing one that other users could read) and the
client's half of the challenge-response that ``durus.protocol`` defines (the
server's half is in ``durus.server_core``). It must never log or put a secret
in an exception message, and never accept a server that has not proved it
knows the secret: a client unpickles what its server sends, so talking to an
impostor would hand it code execution in the client.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from durus.error import DurusError, ProtocolError
from durus.protocol import (
    AUTH_CLIENT_LABEL,
    AUTH_NONCE_BYTES,
    AUTH_SERVER_LABEL,
    AuthAccepted,
    AuthChallenge,
    Authenticate,
    AuthProof,
    ClientProtocol,
    NeedData,
    Reply,
    Request,
    auth_mac,
    macs_match,
)
from durus.utils import read, write

MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 4096


class AuthenticationError(DurusError, ConnectionError):
    """Authentication with the server failed, or was required and not attempted."""


class InsecureSecretFileError(DurusError, PermissionError):
    """A secret file that users other than its owner could read or write."""


def read_secret_file(path: str) -> bytes:
    """The secret in ``path`` (trailing whitespace removed).

    Refuses (InsecureSecretFileError) a file that its group or others may
    read or write, and (ValueError) a secret shorter than MIN_SECRET_BYTES or
    longer than MAX_SECRET_BYTES.
    """
    with open(path, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InsecureSecretFileError(
                f"{path}: the secret file must be readable by its owner only "
                f"(mode {stat.filemode(mode)}; run chmod 600 {path})"
            )
        secret = file.read(MAX_SECRET_BYTES + 1).rstrip()
    if not MIN_SECRET_BYTES <= len(secret) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"{path}: a secret must be {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes, "
            f"got {len(secret)} (e.g. make one with: openssl rand -hex 32)"
        )
    assert secret and secret == secret.rstrip()
    return secret


def authenticate_socket(sock: Any, secret: bytes, where: str = "the server") -> None:
    """Run the client's half of the handshake on a connected, blocking socket-like object.

    Returns when the server accepted this client; AuthenticationError when the
    server closed the connection (a wrong secret, or a server without
    authentication) or could not prove that it knows the secret.
    """
    if not isinstance(secret, bytes) or not secret:
        raise ValueError("the authentication secret must be non-empty bytes")
    protocol = ClientProtocol()
    client_nonce = os.urandom(AUTH_NONCE_BYTES)
    try:
        challenge = _exchange(sock, protocol, Authenticate(client_nonce))
        assert isinstance(challenge, AuthChallenge)
        expected = auth_mac(secret, AUTH_SERVER_LABEL, client_nonce, challenge.server_nonce)
        if not macs_match(expected, challenge.server_mac):
            raise AuthenticationError(f"{where} failed to prove that it knows the secret")
        proof = auth_mac(secret, AUTH_CLIENT_LABEL, client_nonce, challenge.server_nonce)
        accepted = _exchange(sock, protocol, AuthProof(proof))
        assert isinstance(accepted, AuthAccepted)
    except (OSError, ProtocolError) as error:
        if isinstance(error, AuthenticationError):
            raise
        raise AuthenticationError(
            f"{where} refused authentication (wrong secret, or it does not use "
            f"authentication): {type(error).__name__}: {error}"
        ) from None


def _exchange(sock: Any, protocol: ClientProtocol, request: Request) -> Reply:
    write(sock, protocol.send(request))
    while True:
        event = protocol.next_event()
        if not isinstance(event, NeedData):
            return event
        protocol.receive_data(read(sock, event.min_bytes))
