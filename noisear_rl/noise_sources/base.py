"""The noise-source interface, its registry, and the spec syntax the evaluation CLI reads.

A noise source turns prompts (and their encoded condition) into initial noises for one backend:
`source(prompts, cond, generator) -> [B, C, H, W]` unit-variance latents (the form the prior and
`DiffusionBackend.generate` use). Every source that starts from Gaussian noise draws that noise
first, as one `[B, C, H, W]` draw from the generator (`NoiseSource.base_noise`), so sources called
with equally seeded generators start from the same noises and differ only by what they do to them.

Specs (what `python -m noisear_rl.evaluate --sources ...` takes):

    NAME[:ARGUMENT][?KEY=VALUE[&KEY=VALUE...]]

    gaussian
    golden:runs/golden-npnet                    # ARGUMENT: the network's folder
    erasure-injection?num_noises=4&delta=1.0
    noisear:runs/nll/prior?temperature=0.5      # ARGUMENT: a prior folder (or run folder)
    best-of-n:8?reward=shapes                   # ARGUMENT: N
    noisear:runs/dpo?label=noisear+dpo          # `label` names the source in tables and plots

ARGUMENT sets the source's main parameter (its class's `argument`); KEY=VALUE pairs set the
others. Values are parsed as int, float, true/false or text; a comma makes a tuple ("0,5,10"),
except for the text options `label`, `reward` and `path`, which stay as written
("reward=imagereward:1.0,pickscore:0.5").
"""

from __future__ import annotations

import inspect
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.registry import Registry

NOISE_SOURCES: Registry[type[NoiseSource]] = Registry(
    "noise source", "noisear_rl.noise_sources", package="noisear_rl.noise_sources"
)
TEXT_OPTIONS = ("label", "reward", "path")  # option values kept as written


class NoiseSource(ABC):
    """Prompts + condition -> initial noise, batched and seeded by a generator.

    Subclasses implement `sample`; `__call__` checks its input and output.

    Args:
        backend: The diffusion backend the noises are for (latent shape, device, and for some
            sources its `predict_noise`/`generate`).

    Attributes:
        name: The label in tables and plots (a spec's `label=` overrides it).
        argument: The constructor parameter a spec's `:ARGUMENT` sets (None: takes none).
    """

    argument: ClassVar[str | None] = None
    name: str = ""

    def __init__(self, backend: DiffusionBackend) -> None:
        self.backend = backend

    def base_noise(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """The standard Gaussian noise [B, C, H, W] every Gaussian-based source starts from:
        the generator's next `torch.randn` draw of that shape, on the backend's device."""
        return self.backend.random_latents(batch_size, generator)

    @abstractmethod
    def sample(self, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
        """Initial noises [B, C, H, W] for B prompts and their condition."""

    def __call__(self, prompts: list[str], cond: Condition, generator: torch.Generator) -> Tensor:
        """Checks that prompts and condition agree, samples, and checks the noises' shape and values.

        Returns:
            [B, C, H, W] float32 noises on the backend's device.
        """
        if len(prompts) != len(cond):
            raise ValueError(f"got {len(prompts)} prompts but a condition for {len(cond)}")
        noise = self.sample(list(prompts), cond, generator)
        self.backend.check_latents(noise, len(prompts))
        return noise.to(self.backend.device, torch.float32)

    @classmethod
    def default_label(cls, spec: SourceSpec) -> str:
        """The label of a source built from `spec` without `label=`: NAME or NAME:ARGUMENT."""
        return spec.name if spec.argument is None else f"{spec.name}:{spec.argument}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def register_noise_source(name: str) -> Callable[[type[NoiseSource]], type[NoiseSource]]:
    """Class decorator registering a `NoiseSource` subclass under `name` (its default label)."""

    def decorator(cls: type[NoiseSource]) -> type[NoiseSource]:
        if not cls.name:
            cls.name = name
        return NOISE_SOURCES.register(name)(cls)

    return decorator


def list_noise_sources() -> list[str]:
    """Names of the built-in, registered and entry-point noise sources."""
    return NOISE_SOURCES.names()


@dataclass(frozen=True)
class SourceSpec:
    """A parsed noise-source spec (see the module docstring for the syntax).

    Attributes:
        name: The registered source name.
        argument: The text after ':' (None when absent).
        options: KEY=VALUE options, values parsed.
        text: The spec as written.
    """

    name: str
    argument: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    text: str = ""


def parse_spec(spec: str) -> SourceSpec:
    """Parses `NAME[:ARGUMENT][?KEY=VALUE&...]`.

    Raises:
        ValueError: An empty name, or an option without '='.
    """
    text = spec.strip()
    head, _, query = text.partition("?")
    name, colon, argument = head.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"noise-source spec {spec!r} has no name; expected NAME[:ARGUMENT][?KEY=VALUE&...]")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"option {item!r} of noise-source spec {spec!r} must be KEY=VALUE")
        key, value = key.strip(), value.strip()
        options[key] = value if key in TEXT_OPTIONS else parse_value(value)
    return SourceSpec(name, argument.strip() if colon else None, options, text)


def parse_value(text: str) -> Any:
    """'8' -> 8, '0.5' -> 0.5, 'true' -> True, '0,5' -> (0, 5); anything else stays text."""
    if "," in text:
        return tuple(parse_value(part.strip()) for part in text.split(",") if part.strip())
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def source_label(spec: str | SourceSpec) -> str:
    """The name a spec's source gets in tables: its `label=` option, else the class's default."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if "label" in parsed.options:
        return str(parsed.options["label"])
    return NOISE_SOURCES.get(parsed.name).default_label(parsed)


def load_noise_source(spec: str | SourceSpec, backend: DiffusionBackend, **context: Any) -> NoiseSource:
    """Builds the noise source a spec names, for `backend`.

    Args:
        spec: A spec string (module docstring) or a parsed `SourceSpec`.
        backend: The diffusion backend.
        **context: Shared objects a source may take (e.g. `reward=` for best-of-n); passed only to
            sources whose constructor has a parameter of that name. Spec options win over them.

    Raises:
        KeyError: Unknown source name (the message lists the valid ones).
        TypeError: An option the source does not take (the message lists the ones it does), or
            an ARGUMENT for a source without one.
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    cls, options = check_spec(parsed)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "backend")]
    kwargs = {key: value for key, value in context.items() if key in accepted} | options
    source = cls(backend=backend, **kwargs)
    source.name = source_label(parsed)
    return source


def check_spec(spec: str | SourceSpec) -> tuple[type[NoiseSource], dict[str, Any]]:
    """Checks a spec without building its source: a known name, an ARGUMENT only for a source
    that takes one, and options the source takes, each of the type its constructor declares.

    Returns:
        (the source class, its constructor options from the spec; `label` left out).

    Raises:
        KeyError: Unknown source name (the message lists the valid ones).
        TypeError: An option the source does not take, an ARGUMENT for a source without one, or
            a value of the wrong type (`best-of-n:abc`, `?temperature=abc`).
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    cls = NOISE_SOURCES.get(parsed.name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "backend")]
    options = dict(parsed.options)
    options.pop("label", None)
    if parsed.argument is not None:
        if cls.argument is None:
            raise TypeError(f"noise source {parsed.name!r} takes no ':ARGUMENT' (spec {parsed.text!r})")
        options[cls.argument] = parsed.argument if cls.argument in TEXT_OPTIONS else parse_value(parsed.argument)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"noise source {parsed.name!r} has no option(s) {unknown}; it takes {accepted + ['label']} "
            f"(spec {parsed.text!r})"
        )
    hints = typing.get_type_hints(cls.__init__)
    for key, value in options.items():
        if key in hints and not _accepts(hints[key], value):
            raise TypeError(
                f"noise source {parsed.name!r}: {key}={value!r} must be {_describe(hints[key])} (spec {parsed.text!r})"
            )
    return cls, options


def _accepts(hint: Any, value: Any) -> bool:
    """Whether a spec value fits a constructor's type hint (int, float, bool, str, None, tuples,
    unions of them; a class by isinstance; anything else is left to the constructor)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_accepts(args[0], item) for item in value)
        return len(args) == len(value) and all(_accepts(a, item) for a, item in zip(args, value))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    """A type hint in words: `int | None` -> "int or None"."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) is tuple:
        return "a comma-separated list"
    return getattr(hint, "__name__", str(hint))


def encode_on_cpu(backend: DiffusionBackend, prompts: list[str], chunk: int = 256) -> Condition:
    """Every prompt encoded once, `chunk` prompts per `backend.encode` call, kept on the CPU."""
    with torch.no_grad():
        return Condition.cat([backend.encode(prompts[i : i + chunk]).to("cpu") for i in range(0, len(prompts), chunk)])

