"""The one registry idiom of psn_zoo: named builders with fnmatch listing and helpful errors.

Neurons, surrogate functions and models are all registered the same way::

    MODELS = Registry("model")

    @MODELS.register("sew_resnet18", family="resnet")
    def sew_resnet18(...): ...

    MODELS.get("sew_resnet18")   # -> Entry(name="sew_resnet18", obj=sew_resnet18, meta={"family": "resnet"})
    MODELS.names("sew_*")        # -> ["sew_resnet18", "sew_resnet34", ...]
    MODELS.names(["SEW*", "spiking_vgg11"])  # case-insensitive; a list matches any of its patterns (timm's)

Neurons register through ``psn_zoo.neurons.registry.register_neuron``, which reads the name and aliases from the
class (the one home of a neuron type's identity) and stores no metadata of its own.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: What every listing function takes as its filter: None (everything), one fnmatch pattern, or a list of them.
Pattern = str | Iterable[str] | None


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object: its name, the object (class or builder function) and metadata."""

    name: str
    obj: T
    meta: Mapping[str, Any] = field(default_factory=dict)

    def accepted_kwargs(self) -> list[str]:
        """Keyword arguments the registered callable accepts (``self`` excluded)."""
        return [
            p.name
            for p in inspect.signature(self.obj).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]

    def accepts_var_kwargs(self) -> bool:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(self.obj).parameters.values())


class Registry(Generic[T]):
    """A name -> object table. ``kind`` is used in error messages ("unknown neuron ...")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = (), **meta: Any) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` (and ``aliases``); duplicates are an error."""

        def decorator(obj: T) -> T:
            key = _normalise(name)
            for new in (key, *map(_normalise, aliases)):
                if new in self._entries or new in self._aliases:
                    raise KeyError(f"{self.kind} {new!r} is already registered")
            self._entries[key] = Entry(key, obj, dict(meta))
            self._aliases.update({_normalise(alias): key for alias in aliases})
            return obj

        return decorator

    def get(self, name: str) -> Entry[T]:
        """The entry for ``name`` or an alias (case-insensitive, ``-`` = ``_``); unknown names list choices."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        key = _normalise(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise KeyError(self.unknown_message(name))
        return self._entries[key]

    def aliases(self, name: str) -> list[str]:
        key = self.get(name).name
        return sorted(alias for alias, target in self._aliases.items() if target == key)

    def unknown_message(self, name: str) -> str:
        candidates = [*self._entries, *self._aliases]
        close = difflib.get_close_matches(_normalise(name), candidates, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid choices: {', '.join(sorted(self._entries))}."

    def names(self, pattern: Pattern = None) -> list[str]:
        """Sorted registered names, optionally filtered by :func:`match_names` (an fnmatch ``pattern`` such as
        ``"*psn*"`` or a list of them, case-insensitive)."""
        return match_names(self._entries, pattern)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (_normalise(name) in self._entries or _normalise(name) in self._aliases)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


def match_names(names: Iterable[str], pattern: Pattern = None) -> list[str]:
    """The sorted ``names`` that match ``pattern``: None (all), an fnmatch pattern (``"sew*"``) or a list/tuple of
    patterns (a name matching any of them), case-insensitive -- the one rule of every listing in psn_zoo
    (``list_models``, ``list_neurons``, ``list_pretrained``, the ``psn-zoo`` listing commands), as timm's
    ``list_models`` filter."""
    names = sorted(names)
    if pattern is None:
        return names
    patterns = [pattern] if isinstance(pattern, str) else pattern
    if isinstance(patterns, bytes) or not isinstance(patterns, Iterable):
        raise TypeError(f"a name filter is an fnmatch pattern or a list of them, got {type(pattern).__name__}")
    patterns = list(patterns)
    bad = [p for p in patterns if not isinstance(p, str)]
    if bad:
        raise TypeError(f"a name filter is an fnmatch pattern or a list of them, got {bad[0]!r} in {pattern!r}")
    lowered = [p.lower() for p in patterns]
    return [n for n in names if any(fnmatch.fnmatchcase(n.lower(), p) for p in lowered)]


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")
