"""Error types mapped to CLI exit codes (ARCHITECTURE.md: 0 ok, 1 gate/budget, 2 bad input)."""

from __future__ import annotations


class SqueezeError(Exception):
    """Base class. `exit_code` is what the CLI returns; the message is the one line a user sees."""

    exit_code = 3


class UserInputError(SqueezeError):
    """Bad input or usage: a missing/corrupt file, a wrong shape, an unknown target. Exit 2."""

    exit_code = 2


class UntrustedPickleError(UserInputError):
    """A file needs arbitrary-code unpickling and the user did not opt in with --trust-pickle."""


class TargetUnavailableError(UserInputError):
    """The target exists but cannot build or measure on this machine; the message says why."""


class ParityError(SqueezeError):
    """Exported model disagrees with the torch model beyond tolerance. Exit 1: the check failed."""

    exit_code = 1
