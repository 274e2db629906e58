"""An unreachable or broken remote target fails in one line before any model work: one connection
check comes first, and SSH library tracebacks never reach the user."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import assert_refused
from ssh_fixtures import free_port

TEACHER = Path(__file__).resolve().parents[2] / "samples" / "teachers" / "resnet_digits.pt"


@pytest.fixture
def garbage_server():
    """A loopback TCP server that answers every connection with a line that is not an SSH banner."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()

    def serve():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    sock.close()


def test_closed_port_fails_before_the_teacher_is_loaded(cli, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    result = cli("compress", TEACHER, "--recipe", "export", "--target", f"ssh://nobody@127.0.0.1:{free_port()}", "--out", out)
    assert_refused(result, "connection to nobody@127.0.0.1", out=out)
    assert "loading model" not in result.stderr and time.monotonic() - started < 60


def test_a_broken_ssh_banner_is_one_line(cli, tmp_path, garbage_server):
    out = tmp_path / "out"
    result = cli("compress", TEACHER, "--recipe", "export", "--target", f"ssh://nobody@127.0.0.1:{garbage_server}", "--out", out)
    message = assert_refused(result, "127.0.0.1", out=out)
    assert "paramiko" not in result.stderr and "loading model" not in result.stderr, message


def test_an_unresolvable_host_says_what_to_check(cli, tmp_path):
    result = cli("compress", TEACHER, "--recipe", "export", "--target", "ssh://nobody@no-such-host.invalid", "--out", tmp_path / "o")
    assert_refused(result, "~/.ssh/config")
