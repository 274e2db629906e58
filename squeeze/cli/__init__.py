"""`squeeze` command line: a thin shell over squeeze.api.

app.py            the app, consoles, error handling (exit codes), shared options
commands.py       inspect, export, profile, targets, compress, gate, build
pass_commands.py  distill, prune, quantize, search: one-step recipes, options generated from each pass's config
options.py        typed config -> command-line options
render.py         human output (tables); --json prints the result as it is

Exit codes: 0 ok; 1 gate failed / budget not met / parity failed; 2 bad input or usage (one line
on stderr, no traceback unless --debug); 3 internal error (traceback written to a log file).
"""

from squeeze.cli import commands  # noqa: F401 - importing it registers the commands (the pass commands load lazily: app.py)
from squeeze.cli.app import app, main

__all__ = ["app", "main"]
