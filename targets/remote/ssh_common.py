"""What the SSH transport shares with its callers: errors, device addresses, SSH options, command results."""

from __future__ import annotations

import errno
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

from squeeze.errors import TargetUnavailableError, UserInputError


class RemoteError(TargetUnavailableError):
    """The remote machine could not do what was asked; the message says what and why. Exit 2."""


class DeviceUnreachableError(RemoteError):
    pass


class AuthenticationFailedError(RemoteError):
    pass


class HostKeyError(RemoteError):
    pass


class RemoteCommandError(RemoteError):
    pass


class RemoteTimeoutError(RemoteError):
    pass


class DiskFullError(RemoteError):
    pass


NO_SPACE = "No space left on device"
_ADDRESS = re.compile(r"^(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[0-9a-fA-F:]+\]|[^@/:\s\[\]]+)(?::(?P<port>\d{1,5}))?$")


@dataclass(frozen=True)
class DeviceAddress:
    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port else text

    @classmethod
    def parse(cls, text: str) -> DeviceAddress:
        """`user@host`, `host`, `user@host:port` or the same behind `ssh://`."""
        raw = text.strip()
        body = raw[len("ssh://"):] if raw.startswith("ssh://") else raw
        body = body.rstrip("/")
        match = _ADDRESS.match(body)
        if not body or not match:
            raise UserInputError(f"device address must look like user@host or user@host:port (or ssh://user@host:port), got {text!r}")
        port = int(match.group("port")) if match.group("port") else None
        if port is not None and not 0 < port < 65536:
            raise UserInputError(f"port must be 1-65535, got {port} in {text!r}")
        return cls(host=match.group("host").strip("[]"), user=match.group("user"), port=port)


@dataclass(frozen=True)
class SshOptions:
    """How to reach the device. Defaults follow OpenSSH: port 22, ~/.ssh/known_hosts, agent + default keys."""

    identity_file: str | None = None
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    port: int | None = None  # overrides a port in the address
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 900.0  # TensorRT builds on a Jetson Nano take minutes
    retries: int = 3  # further attempts after a transient failure
    backoff_s: float = 1.0  # first wait; doubles each attempt
    ssh_config: str | None = None  # None: ~/.ssh/config when it exists (HostName, User, Port, IdentityFile)

    def __post_init__(self) -> None:
        if self.identity_file is not None and not Path(self.identity_file).expanduser().is_file():
            raise UserInputError(f"--identity-file not found: {self.identity_file}")
        if self.known_hosts is not None and not Path(self.known_hosts).expanduser().is_file():
            raise UserInputError(f"--known-hosts file not found: {self.known_hosts}")
        if self.port is not None and not 0 < self.port < 65536:
            raise UserInputError(f"--port must be 1-65535, got {self.port}")
        if self.connect_timeout_s <= 0 or self.command_timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0:
            raise UserInputError("ssh timeouts must be > 0, retries and backoff >= 0")


@dataclass
class CommandResult:
    argv: list[str] | str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return "\n".join(part.strip("\n") for part in (self.stdout, self.stderr) if part.strip())


def quote(argv: list[str] | str) -> str:
    return argv if isinstance(argv, str) else " ".join(shlex.quote(str(a)) for a in argv)


def _transient(exc: BaseException) -> bool:
    """Worth another attempt: the network or the server hiccupped, nothing the user must fix."""
    import paramiko

    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException, socket.gaierror)):
        return False
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return False  # connection refused on every address: nothing listens there
    if isinstance(exc, (socket.timeout, TimeoutError, ConnectionResetError, EOFError, ConnectionAbortedError)):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED):
        return False
    if isinstance(exc, paramiko.SSHException):
        text = str(exc)
        return any(s in text for s in ("protocol banner", "No existing session", "Connection reset", "EOF", "Timeout"))
    return False
