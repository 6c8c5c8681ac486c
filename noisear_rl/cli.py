"""How the command lines begin and end, and the options they share.

Every command (`python -m noisear_rl.train|collect|evaluate`) runs its work through
`run_command`. It first imports the modules named by `--import MODULE_OR_FILE` (a user's reward,
algorithm or noise source registers itself on import), before any name is looked up. An
exception becomes `error: <message>` on stderr (the toolkit's messages name what is wrong and how
to fix it in one line) and exit status 2; `--debug` on the command line or `NOISEAR_DEBUG=1` in
the environment lets the exception through with its traceback instead.

The option types every command's config uses (`Dtype`, `Imports`, `renamed`) keep one vocabulary:
`--output-dir`, `--reward`, `--device`, `--dtype`, `--model`, `--threads`, `--import`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

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

IMPORT_FLAG = "--import"
Dtype = Literal["float32", "float16", "bfloat16"]
"""The `--dtype` of every command: the diffusion pipeline's and the reward networks' (a prior stays float32)."""
Imports = Annotated[
    tuple[str, ...],
    tyro.conf.arg(name="import", metavar="MODULE_OR_FILE", help=(
        "A module (`my_package.rewards`) or Python file (`my_reward.py`) imported before anything else: "
        "the rewards, algorithms or noise sources it registers can be named like built-ins.")),
    tyro.conf.UseAppendAction,
]
"""`--import MODULE_OR_FILE`, repeatable: modules imported before any name is looked up."""


def renamed(new: str, old: str) -> Any:
    """The tyro marker of the option `new` ("--output-dir") whose old spelling `old` ("--out") still
    works for one release: `Annotated[Path, renamed("--output-dir", "--out")]`.

    tyro lists aliases before the name in usage lines and help, so the old spelling is passed as
    the name and the new one as the alias: both parse, and the new one is shown first.
    """
    return tyro.conf.arg(name=old.removeprefix("--"), aliases=(new,))


def import_modules(names: Iterable[str]) -> None:
    """Imports each module name or Python file (`--import`); a file is imported once per process.

    Raises:
        ValueError: No such module or file; the message names the fix.
        RuntimeError: The module raised while it was imported; the message names it and the error.
    """
    for name in names:
        is_file = name.endswith(".py") or "/" in name or os.sep in name
        if is_file and not Path(name).is_file():
            raise ValueError(f"{IMPORT_FLAG} {name}: no such file; give the path of a .py file, or a module name")
        try:
            if is_file:
                _import_file(Path(name))
            else:
                importlib.import_module(name)
        except ModuleNotFoundError as error:
            if is_file or not (error.name == name or name.startswith(f"{error.name}.")):
                raise RuntimeError(f"{IMPORT_FLAG} {name} failed: {type(error).__name__}: {error}") from error
            raise ValueError(f"{IMPORT_FLAG} {name}: no module named {name!r} is importable from {os.getcwd()}; "
                             "give an installed module, or the path of a .py file") from None
        except Exception as error:
            raise RuntimeError(f"{IMPORT_FLAG} {name} failed: {type(error).__name__}: {error}") from error


def _import_file(path: Path) -> None:
    """Executes the Python file `path` as a module, unless this process already has."""
    resolved = path.resolve()
    module_name = f"noisear_rl_import_{resolved.stem}_{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    assert spec is not None and spec.loader is not None  # a file's path always gets a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise


def run_config_command(
    work: Callable[[Any], Any], config_class: type, module: str, doc: str | None, argv: Sequence[str] | None = None
) -> int:
    """`run_command` for a command that parses one config dataclass and hands it to `work`.

    Args:
        work: Does the work with the parsed config.
        config_class: The config dataclass (its fields are the options, its docstrings their help).
        module: The command's module, for its usage line (`python -m MODULE`).
        doc: The module's docstring, the command's description.
        argv: The arguments (None: `sys.argv[1:]`).
    """

    def command(arguments: list[str]) -> None:
        work(tyro.cli(config_class, args=arguments, prog=f"python -m {module}", description=f"{doc}\n{DEBUG_HELP}"))

    return run_command(command, argv)


def early_values(argv: Sequence[str], flag: str) -> list[str]:
    """Every value given to `flag` in `argv` (`FLAG X` or `FLAG=X`), read before the full parse;
    a flag without its value is left for that parse to report."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument(flag, action="append", default=[], dest="values")
    try:
        return parser.parse_known_args(list(argv))[0].values
    except argparse.ArgumentError:
        return []


def set_threads(threads: int | None) -> None:
    """`--threads`: torch's CPU threads (None leaves torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


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
    """Imports the `--import` modules, then runs `command(argv without --debug)`; returns the exit
    status (0, or 2 after an error).

    Args:
        command: Parses the arguments and does the work.
        argv: The arguments (None: `sys.argv[1:]`).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(arguments)
    try:
        import_modules(early_values(arguments, IMPORT_FLAG))
        command([a for a in arguments if a != DEBUG_FLAG])
    except Exception as error:  # KeyboardInterrupt and SystemExit (--help, usage errors) pass through
        if debug:
            raise
        print(error_message(error), file=sys.stderr)
        return EXIT_ERROR
    return 0
