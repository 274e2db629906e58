"""SSH transport against a real OpenSSH server on loopback: commands, copies, and every failure a user meets."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from squeeze.errors import UserInputError
from squeeze.targets.remote.transport import (
    AuthenticationFailedError,
    DeviceAddress,
    DeviceUnreachableError,
    DiskFullError,
    HostKeyError,
    RemoteCommandError,
    RemoteHost,
    RemoteTimeoutError,
    SshOptions,
    parse_df_available,
)


@pytest.mark.parametrize("text, expected", [
    ("jetson", DeviceAddress("jetson")),
    ("nvidia@jetson.local", DeviceAddress("jetson.local", "nvidia")),
    ("nvidia@10.0.0.7:2222", DeviceAddress("10.0.0.7", "nvidia", 2222)),
    ("ssh://pi@board:22", DeviceAddress("board", "pi", 22)),
    ("ssh://pi@[::1]:2200/", DeviceAddress("::1", "pi", 2200)),
])
def test_parse_address(text, expected):
    assert DeviceAddress.parse(text) == expected


@pytest.mark.parametrize("text", ["", "user@", "a@b@c", "user@host:port", "user@host:70000", "ssh://"])
def test_parse_address_rejects_garbage(text):
    with pytest.raises(UserInputError, match="address|port"):
        DeviceAddress.parse(text)


def test_missing_identity_file_is_one_clear_error(tmp_path):
    with pytest.raises(UserInputError, match="--identity-file not found"):
        SshOptions(identity_file=str(tmp_path / "nope"))


def test_run_put_get_and_cleanup(sshd, tmp_path):
    local = tmp_path / "payload.bin"
    local.write_bytes(b"squeeze" * 1000)
    with RemoteHost(sshd.address, sshd.options()) as host:
        work = host.make_workdir(str(sshd.root))
        host.put(local, f"{work}/payload.bin")
        result = host.run(["sha256sum", f"{work}/payload.bin"])
        assert result.returncode == 0 and result.stdout.split()[0] == __import__("hashlib").sha256(local.read_bytes()).hexdigest()
        host.get(f"{work}/payload.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
        assert host.run("echo out; echo err >&2; exit 3", check=False).returncode == 3
        with pytest.raises(RemoteCommandError, match=r"exit 3\): .*err"):
            host.run("echo out; echo err >&2; exit 3", what="a failing step")
        big = host.run(["head", "-c", "3000000", "/dev/zero"])  # more than any channel window: must not deadlock
        assert len(big.stdout) == 3_000_000
        host.remove_tree(work)
        assert not host.exists(work)
    assert host.attempts[-1]["ok"]  # (a loaded CI box may need a retry; that is the transport doing its job)


def test_command_timeout_is_enforced(sshd):
    with RemoteHost(sshd.address, sshd.options()) as host:
        started = time.monotonic()
        with pytest.raises(RemoteTimeoutError, match="timed out .* after 1 s"):
            host.run(["sleep", "30"], timeout_s=1)
        assert time.monotonic() - started < 10


def test_wrong_key_is_auth_failure(sshd, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    host = RemoteHost(sshd.address, sshd.options(identity_file=str(tmp_path / "other")))
    with pytest.raises(AuthenticationFailedError, match=r"authentication failed for .*127\.0\.0\.1.*other"):
        host.connect()
    assert len(host.attempts) == 1  # never retried: another try cannot fix a wrong key


def test_changed_host_key_is_refused(sshd, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    kind, key = (tmp_path / "impostor.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    with pytest.raises(HostKeyError, match="does not match .*refusing to connect"):
        RemoteHost(sshd.address, sshd.options(known_hosts=str(known))).connect()


def test_unknown_host_key_is_refused(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match=r"not in .*known_hosts.*ssh-keyscan -p"):
        RemoteHost(sshd.address, sshd.options(known_hosts=str(empty))).connect()


def test_closed_port_fails_fast_without_retries(sshd):
    port = sshd.closed_port()  # nothing listens there
    host = RemoteHost(f"{sshd.user}@127.0.0.1:{port}", sshd.options(retries=3, backoff_s=5))
    started = time.monotonic()
    with pytest.raises(DeviceUnreachableError, match="device unreachable: connection to .* refused"):
        host.connect()
    assert time.monotonic() - started < 3 and len(host.attempts) == 1


def test_transient_drops_are_retried_with_backoff(sshd, flaky_proxy, tmp_path):
    proxy = flaky_proxy(drops=2)
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts.read_text().replace(f":{sshd.port}]", f":{proxy.port}]").replace(f"]:{sshd.port}", f"]:{proxy.port}"))
    waits: list[float] = []
    host = RemoteHost(f"{sshd.user}@127.0.0.1:{proxy.port}", sshd.options(known_hosts=str(known), retries=3, backoff_s=0.1),
                      sleep=lambda s: (waits.append(s), time.sleep(s)))
    with host:
        assert host.run(["echo", "through the proxy"]).stdout.strip() == "through the proxy"
    assert [a["ok"] for a in host.attempts] == [False, False, True]
    assert waits == [0.1, 0.2]  # exponential backoff
    assert "banner" in host.attempts[0]["error"] or "EOF" in host.attempts[0]["error"] or "reset" in host.attempts[0]["error"].lower()


def test_transient_drops_exhaust_retries(sshd, flaky_proxy, tmp_path):
    proxy = flaky_proxy(drops=10)
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts.read_text().replace(f"]:{sshd.port}", f"]:{proxy.port}"))
    host = RemoteHost(f"{sshd.user}@127.0.0.1:{proxy.port}", sshd.options(known_hosts=str(known), retries=2, backoff_s=0.01))
    with pytest.raises(DeviceUnreachableError, match="failed after 3 attempt"):
        host.connect()


def test_disk_full_from_a_real_enospc(sshd):
    with RemoteHost(sshd.address, sshd.options()) as host:
        with pytest.raises(DiskFullError, match="disk full on .*No space left on device"):
            host.run("head -c 1000 /dev/zero > /dev/full", what="writing the engine")


def test_preflight_space_check_uses_real_df(sshd):
    with RemoteHost(sshd.address, sshd.options()) as host:
        free = host.free_bytes(str(sshd.root))
        assert free and free > 0
        with pytest.raises(DiskFullError, match="needs about .* MB .* only .* MB free"):
            host.ensure_free(str(sshd.root), free * 10, "the engine build")


def test_parse_df():
    text = "Filesystem     1024-blocks    Used Available Capacity Mounted on\n/dev/vda1       263174212 2500 1024 99% /\n"
    assert parse_df_available(text) == 1024 * 1024
    assert parse_df_available("garbage") is None


def test_tilde_and_paths_with_spaces_survive_quoting(sshd, tmp_path):
    with RemoteHost(sshd.address, sshd.options()) as host:
        work = host.make_workdir(str(sshd.root))
        odd = f"{work}/a dir with 'quotes'"
        host.run(["mkdir", "-p", odd])
        host.put(Path(__file__), f"{odd}/x.py")
        assert host.exists(f"{odd}/x.py")
        host.remove_tree(work)
