"""SSH transport shared by the remote targets (ssh://, jetson-*): paramiko underneath.

What it guarantees:
- host-key checking is ON: the host must be in known_hosts (yours, or --known-hosts FILE); an
  unknown or changed key is refused, never silently accepted;
- key authentication only (an --identity-file, else ssh-agent and ~/.ssh default keys);
- connection attempts that fail for a transient reason (timeout, reset, no SSH banner) are
  retried with exponential backoff; refused connections, unknown hosts, auth and host-key
  failures are not (retrying cannot fix them) and fail at once with one clear line;
- every remote command runs under a deadline (coreutils `timeout` on the remote plus a local
  one), and its stdout/stderr are drained concurrently so a chatty command cannot deadlock;
- "No space left on device" anywhere in a failure becomes DiskFullError with `df` of the path.

`LocalHost` offers the same methods on this machine, so trtexec-driving code is written once.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any



from squeeze.targets.remote.ssh_common import (  # noqa: F401 - errors and options, re-exported
    RemoteError,
    DeviceUnreachableError,
    AuthenticationFailedError,
    HostKeyError,
    RemoteCommandError,
    RemoteTimeoutError,
    DiskFullError,
    NO_SPACE,
    DeviceAddress,
    SshOptions,
    CommandResult,
    quote,
    _transient,
)


class RemoteHost:
    """An SSH connection to one machine. Use as a context manager; reconnects on transient drops."""

    def __init__(self, address: DeviceAddress | str, options: SshOptions | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.address = DeviceAddress.parse(address) if isinstance(address, str) else address
        self.options = options or SshOptions()
        self._sleep = sleep
        self._client: Any = None
        self.attempts: list[dict[str, Any]] = []  # every connection attempt: error and wait, for the record
        self.hostname, self.user, self.port, self.key_files = self._resolve()

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    # -- connection -----------------------------------------------------------------------

    def _resolve(self) -> tuple[str, str, int, list[str]]:
        """Apply ~/.ssh/config (HostName, User, Port, IdentityFile) like `ssh` would, then the explicit options."""
        import getpass

        import paramiko

        hostname, user, port, keys = self.address.host, self.address.user, self.address.port, []
        config_path = Path(self.options.ssh_config or "~/.ssh/config").expanduser()
        if config_path.is_file():
            entry = paramiko.SSHConfig.from_path(str(config_path)).lookup(self.address.host)
            hostname = entry.get("hostname", hostname)
            user = user or entry.get("user")
            port = port or (int(entry["port"]) if "port" in entry else None)
            keys = [str(Path(k).expanduser()) for k in entry.get("identityfile", []) if Path(k).expanduser().is_file()]
        if self.options.identity_file:
            keys = [str(Path(self.options.identity_file).expanduser())]
        return hostname, user or getpass.getuser(), self.options.port or port or 22, keys

    def connect(self) -> RemoteHost:
        import paramiko

        opts = self.options
        last: BaseException | None = None
        for attempt in range(opts.retries + 1):
            client = paramiko.SSHClient()
            known = Path(opts.known_hosts).expanduser() if opts.known_hosts else Path("~/.ssh/known_hosts").expanduser()
            if known.is_file():
                client.load_host_keys(str(known))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            started = time.monotonic()
            try:
                client.connect(
                    self.hostname, port=self.port, username=self.user,
                    key_filename=self.key_files or None,
                    # an explicit key means that key only (like IdentitiesOnly=yes): no surprise agent keys
                    look_for_keys=not self.options.identity_file, allow_agent=not self.options.identity_file,
                    timeout=opts.connect_timeout_s, banner_timeout=opts.connect_timeout_s, auth_timeout=opts.connect_timeout_s,
                )
                self._client = client
                self.attempts.append({"attempt": attempt + 1, "ok": True, "seconds": round(time.monotonic() - started, 3)})
                return self
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised as one clear error
                client.close()
                last = exc
                wait = opts.backoff_s * (2 ** attempt) if attempt < opts.retries and _transient(exc) else None
                self.attempts.append({"attempt": attempt + 1, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                                      "seconds": round(time.monotonic() - started, 3), "retry_after_s": wait})
                if wait is None:
                    break
                self._sleep(wait)
        raise self._explain(last, known)

    def _explain(self, exc: BaseException | None, known: Path) -> RemoteError:
        import paramiko

        where = f"{self.user}@{self.hostname}:{self.port}"
        tries = len(self.attempts)
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyError(
                f"host key of {where} does not match the one in {known} (got {exc.key.get_name()} "
                f"{exc.key.get_fingerprint().hex()}): refusing to connect. If the device was re-flashed, verify the new key and "
                f"update the entry (ssh-keygen -R '[{self.hostname}]:{self.port}' -f {known})")
        if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
            return HostKeyError(
                f"{where} is not in {known}: host-key checking is on. Verify its fingerprint, then add it: "
                f"ssh-keyscan -p {self.port} {self.hostname} >> {known} (or pass --known-hosts FILE)")
        if isinstance(exc, paramiko.AuthenticationException):
            keys = ", ".join(self.key_files) or "ssh-agent / ~/.ssh default keys"
            return AuthenticationFailedError(f"authentication failed for {where} with {keys}: is the public key in the device's "
                                             f"~/.ssh/authorized_keys? (pass --identity-file KEY)")
        if isinstance(exc, socket.gaierror):
            return DeviceUnreachableError(f"cannot resolve host {self.hostname!r}: {exc.strerror or exc}; check the address "
                                          f"(user@host[:port]) and any 'Host {self.address.host}' entry in ~/.ssh/config")
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return DeviceUnreachableError(f"device unreachable: connection to {where} refused (is sshd running and the port right?)")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return DeviceUnreachableError(f"device unreachable: no answer from {where} within {self.options.connect_timeout_s:g} s "
                                          f"after {tries} attempt(s)")
        if isinstance(exc, OSError):
            return DeviceUnreachableError(f"device unreachable: {where}: {exc.strerror or exc}")
        return DeviceUnreachableError(f"SSH to {where} failed after {tries} attempt(s): {type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> RemoteHost:
        return self.connect() if self._client is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _with_reconnect(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run fn; if the SSH session itself dropped (not the command), reconnect with backoff and run it again."""
        import paramiko

        for attempt in range(self.options.retries + 1):
            if self._client is None or not self._client.get_transport() or not self._client.get_transport().is_active():
                self.close()
                self.connect()
            try:
                return fn()
            # Only a dropped session is retried; an SFTP or command error (an OSError with a status) is the answer.
            except (paramiko.SSHException, EOFError, ConnectionResetError, BrokenPipeError, socket.timeout) as exc:
                if attempt == self.options.retries:
                    raise RemoteError(f"{what} on {self} failed: the SSH session dropped ({type(exc).__name__}: {exc})") from None
                self.close()
                self._sleep(self.options.backoff_s * (2 ** attempt))
        raise AssertionError("unreachable")

    # -- commands -------------------------------------------------------------------------

    def run(self, argv: list[str] | str, *, timeout_s: float | None = None, check: bool = True, what: str | None = None) -> CommandResult:
        """Run a command (argv is quoted for the remote shell; a str runs as shell code) under a deadline."""
        timeout = timeout_s or self.options.command_timeout_s
        command = quote(argv)
        # The remote `timeout` kills the process; closing a channel alone would leave it running.
        wrapped = f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 {int(timeout) + 1} sh -c {shlex.quote(command)}; " \
                  f"else exec sh -c {shlex.quote(command)}; fi"
        result = self._with_reconnect(what or command, lambda: self._exec(wrapped, timeout))
        result.argv = argv
        if result.returncode in (124, 137) and result.seconds >= timeout:
            raise RemoteTimeoutError(f"{what or command} timed out on {self} after {timeout:g} s")
        if check and result.returncode != 0:
            self._raise_failed(result, what or command)
        return result

    def _exec(self, command: str, timeout: float) -> CommandResult:
        started = time.monotonic()
        transport = self._client.get_transport()
        channel = transport.open_session(timeout=self.options.connect_timeout_s)
        channel.exec_command(command)
        out, err = bytearray(), bytearray()
        deadline = started + timeout + 10
        while True:
            if channel.recv_ready():
                out += channel.recv(1 << 16)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(1 << 16)
            elif channel.exit_status_ready():
                # the exit status can arrive while output is still in flight: read both streams to their end (an
                # empty read), not just what is buffered now (on a loaded host that cut a 3 MB stdout short)
                channel.settimeout(max(1.0, deadline - time.monotonic()))
                while chunk := channel.recv(1 << 16):
                    out += chunk
                while chunk := channel.recv_stderr(1 << 16):
                    err += chunk
                break
            else:
                if time.monotonic() > deadline:
                    channel.close()
                    raise RemoteTimeoutError(f"{command[:120]} timed out on {self} after {timeout:g} s")
                select.select([channel], [], [], 0.02)  # exit status does not wake select: poll briefly
        code = channel.recv_exit_status()
        channel.close()
        return CommandResult(command, code, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - started)

    def _raise_failed(self, result: CommandResult, what: str) -> None:
        if NO_SPACE in result.output:
            raise DiskFullError(f"disk full on {self} while running {what}: {NO_SPACE}")
        tail = " | ".join(line.strip() for line in result.output.strip().splitlines()[-6:] if line.strip())
        raise RemoteCommandError(f"{what} failed on {self} (exit {result.returncode}): {tail}")

    # -- files ----------------------------------------------------------------------------

    def put(self, local: Path, remote: str) -> None:
        def upload() -> None:
            with self._client.open_sftp() as sftp:
                sftp.put(str(local), remote)

        try:
            self._with_reconnect(f"copying {local.name} to the device", upload)
        except OSError as exc:
            self._raise_copy_failed(exc, local, remote)

    def get(self, remote: str, local: Path) -> None:
        def download() -> None:
            with self._client.open_sftp() as sftp:
                sftp.get(remote, str(local))

        try:
            self._with_reconnect(f"copying {remote} back", download)
        except FileNotFoundError:
            raise RemoteCommandError(f"{remote} does not exist on {self}") from None

    def _raise_copy_failed(self, exc: OSError, local: Path, remote: str) -> None:
        free = self.free_bytes(str(Path(remote).parent))
        if free is not None and free < local.stat().st_size:
            raise DiskFullError(f"disk full on {self}: {local.name} ({local.stat().st_size} bytes) does not fit in "
                                f"{Path(remote).parent} ({free} bytes free)") from None
        raise RemoteCommandError(f"copying {local} to {self}:{remote} failed: {exc}") from None

    def read_text(self, remote: str) -> str | None:
        result = self.run(["cat", remote], check=False)
        return result.stdout if result.returncode == 0 else None

    def exists(self, remote: str) -> bool:
        return self.run(["test", "-e", remote], check=False).returncode == 0

    def is_executable(self, remote: str) -> bool:
        return self.run(["test", "-x", remote], check=False).returncode == 0

    def make_workdir(self, base: str = "/tmp") -> str:
        return self.run(["mktemp", "-d", f"{base.rstrip('/')}/squeeze.XXXXXX"], what="creating a work directory").stdout.strip()

    def remove_tree(self, path: str) -> None:
        if path and path not in ("/", "~") and "squeeze" in path:  # only ever our own work dirs
            self.run(["rm", "-rf", "--", path], check=False)

    def free_bytes(self, path: str) -> int | None:
        result = self.run(["df", "-Pk", path], check=False)
        return parse_df_available(result.stdout) if result.returncode == 0 else None

    def ensure_free(self, path: str, needed: int, what: str) -> int | None:
        free = self.free_bytes(path)
        if free is not None and free < needed:
            raise DiskFullError(f"disk full on {self}: {what} needs about {needed / 1e6:.1f} MB in {path}, only {free / 1e6:.1f} MB free")
        return free


def parse_df_available(text: str) -> int | None:
    """Available bytes from `df -Pk PATH` (POSIX format: the 4th column of the last line, in KiB)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    fields = lines[-1].split()
    try:
        return int(fields[3]) * 1024
    except (IndexError, ValueError):
        return None


@dataclass
class LocalHost:
    """The same interface on this machine (for a local trtexec): plain subprocess and file copies."""

    command_timeout_s: float = 900.0
    log: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "this machine"

    def __enter__(self) -> LocalHost:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def run(self, argv: list[str] | str, *, timeout_s: float | None = None, check: bool = True, what: str | None = None) -> CommandResult:
        started = time.monotonic()
        timeout = timeout_s or self.command_timeout_s
        try:
            proc = subprocess.run(argv, shell=isinstance(argv, str), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RemoteTimeoutError(f"{what or quote(argv)} timed out after {timeout:g} s") from None
        except FileNotFoundError as exc:
            raise RemoteCommandError(f"{what or quote(argv)}: {exc}") from None
        result = CommandResult(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
        if check and result.returncode != 0:
            if NO_SPACE in result.output:
                raise DiskFullError(f"disk full while running {what or quote(argv)}: {NO_SPACE}")
            tail = " | ".join(line.strip() for line in result.output.strip().splitlines()[-6:] if line.strip())
            raise RemoteCommandError(f"{what or quote(argv)} failed (exit {result.returncode}): {tail}")
        return result

    def put(self, local: Path, remote: str) -> None:
        shutil.copyfile(local, remote)

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)

    def read_text(self, remote: str) -> str | None:
        try:
            return Path(remote).read_text()
        except OSError:
            return None

    def exists(self, remote: str) -> bool:
        return Path(remote).exists()

    def is_executable(self, remote: str) -> bool:
        return os.access(remote, os.X_OK) and Path(remote).is_file()

    def make_workdir(self, base: str = "/tmp") -> str:
        return tempfile.mkdtemp(prefix="squeeze.", dir=base)

    def remove_tree(self, path: str) -> None:
        if "squeeze" in path:
            shutil.rmtree(path, ignore_errors=True)

    def free_bytes(self, path: str) -> int | None:
        return shutil.disk_usage(path).free

    def ensure_free(self, path: str, needed: int, what: str) -> int | None:
        free = self.free_bytes(path)
        if free is not None and free < needed:
            raise DiskFullError(f"disk full: {what} needs about {needed / 1e6:.1f} MB in {path}, only {free / 1e6:.1f} MB free")
        return free
