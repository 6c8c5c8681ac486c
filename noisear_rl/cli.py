"""How the command lines end: one-line errors with exit status 2, the traceback on request.

Every command (`python -m noisear_rl.train|collect|evaluate`) runs its work through
`run_command`. An exception becomes `error: <message>` on stderr (the toolkit's messages name
what is wrong and how to fix it in one line) and exit status 2; `--debug` on the command line or
`NOISEAR_DEBUG=1` in the environment lets the exception through with its traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "NOISEAR_DEBUG"
EXIT_ERROR = 2
DEBUG_HELP = (
    f"Errors are printed in one line and exit with status {EXIT_ERROR}; `{DEBUG_FLAG}` (or {DEBUG_VARIABLE}=1) "
    "shows the traceback instead."
)
# Exceptions the toolkit raises for bad input, with messages meant for users; any other
# exception is a failure the message alone may not explain, so the hint to --debug is added.
_INPUT_ERRORS = (ValueError, KeyError, TypeError, OSError, RuntimeError)


def debug_requested(argv: Sequence[str]) -> bool:
    """Whether `argv` holds `--debug` or the environment sets NOISEAR_DEBUG (to anything but "", "0")."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def error_message(error: BaseException) -> str:
    """The one-line (two with the debug hint) text printed for `error`."""
    text = error.args[0] if isinstance(error, KeyError) and len(error.args) == 1 else str(error)
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    if isinstance(error, _INPUT_ERRORS):
        return f"error: {first}"
    return f"error: {type(error).__name__}: {first}\n(rerun with {DEBUG_FLAG} or {DEBUG_VARIABLE}=1 for the traceback)"


def run_command(command: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Runs `command(argv without --debug)`; returns the exit status (0, or 2 after an error).

    Args:
        command: Parses the arguments and does the work.
        argv: The arguments (None: `sys.argv[1:]`).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(arguments)
    try:
        command([a for a in arguments if a != DEBUG_FLAG])
    except Exception as error:  # KeyboardInterrupt and SystemExit (--help, usage errors) pass through
        if debug:
            raise
        print(error_message(error), file=sys.stderr)
        return EXIT_ERROR
    return 0
