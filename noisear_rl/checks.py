"""Input checks the commands and environments run before any work: option ranges and devices.

Each check raises a ValueError whose message names the option as the command line spells it
(`--dpo.iterations`) and what it must be, so that a bad value fails in one line before anything
is loaded or written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def option_name(field: str, prefix: str = "--") -> str:
    """The command-line spelling of a config field: `option_name("num_envs")` is `--num-envs`."""
    return prefix + field.replace("_", "-")


def check_at_least(config: Any, minimum: int, names: Iterable[str], prefix: str = "--") -> None:
    """Raises a ValueError for the first of the fields `names` of `config` that is below `minimum`
    (None, an option's "use the default", passes).

    Args:
        config: A config dataclass.
        minimum: The smallest valid value.
        names: Field names of integer options.
        prefix: What the command line puts before the field's name (`--`, `--dpo.`).
    """
    for name in names:
        value = getattr(config, name)
        if value is not None and not (isinstance(value, (int, float)) and value >= minimum):
            raise ValueError(f"{option_name(name, prefix)} must be >= {minimum}, got {value!r}")


def check_positive(config: Any, names: Iterable[str], prefix: str = "--", allow_inf: bool = False) -> None:
    """Raises a ValueError for the first of the fields `names` of `config` that is not a number > 0
    (finite unless `allow_inf`); None passes."""
    for name in names:
        value = getattr(config, name)
        if value is None:
            continue
        if not (isinstance(value, (int, float)) and value > 0 and (allow_inf or math.isfinite(value))):
            rule = "> 0" if allow_inf else "a finite number > 0"
            raise ValueError(f"{option_name(name, prefix)} must be {rule}, got {value!r}")


def check_finite(
    config: Any, names: Iterable[str], prefix: str = "--", minimum: float = -math.inf, maximum: float = math.inf
) -> None:
    """Raises a ValueError for the first of the fields `names` of `config` that is not a finite
    number in [`minimum`, `maximum`]; None passes."""
    for name in names:
        value = getattr(config, name)
        if value is None:
            continue
        if not (isinstance(value, (int, float)) and math.isfinite(value) and minimum <= value <= maximum):
            if maximum < math.inf:
                raise ValueError(f"{option_name(name, prefix)} must lie in [{minimum:g}, {maximum:g}], got {value!r}")
            rule = "a finite number" if minimum == -math.inf else f"a finite number >= {minimum:g}"
            raise ValueError(f"{option_name(name, prefix)} must be {rule}, got {value!r}")


def check_device(device: str | torch.device, option: str = "--device") -> torch.device:
    """The device `device` names, if this machine has it.

    Raises:
        ValueError: Not a device name, or a CUDA/MPS device this torch build or machine lacks;
            the message names the fix.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{option} {device!r} is not a device name; use cpu, cuda or cuda:N") from error
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{option} {device}: this machine has no usable CUDA device (torch {torch.__version__}, "
                "torch.cuda.is_available() is False); pass --device cpu, or install a CUDA build of torch"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"{option} {device}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{option} {device}: MPS is not available on this machine; pass --device cpu")
    elif parsed.type != "cpu":
        raise ValueError(f"{option} {device!r}: unsupported device type {parsed.type!r}; use cpu, cuda or cuda:N")
    return parsed
