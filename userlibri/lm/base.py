"""The one language-model protocol every scorer implements, and the registry of LM kinds.

Scores are natural-log probabilities over the model's token ids (the ASR model's sentencepiece
ids). The decoder owns the fusion weights; an LM only ever returns log-probabilities. States are
opaque to the decoder but must be hashable and cheap to compare, so that beams ending in the same
LM state can be merged.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Generic, Protocol, TypeVar, runtime_checkable

from userlibri.errors import ConfigError

#: An LM state: anything hashable and comparable (a tuple, a frozen dataclass, a ``kenlm.State``).
LMState = Hashable


@runtime_checkable
class LanguageModel(Protocol):
    """Natural-log scores over the model's token ids.

    ``start_state()`` is the state before the first token (after ``<s>``);
    ``score(state, token)`` returns ``(log p(token | state), next_state)``;
    ``final_score(state)`` is the log-probability of ending the sentence in ``state``.
    The sum of all ``score`` values plus ``final_score`` is the sentence log-probability.
    """

    def start_state(self) -> LMState: ...

    def score(self, state: LMState, token: int) -> tuple[float, LMState]: ...

    def final_score(self, state: LMState) -> float: ...


T = TypeVar("T")


class Registry(Generic[T]):
    """A small name -> object registry that rejects duplicate and unknown names."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; a name may be registered only once."""

        def decorate(obj: T) -> T:
            if not name or name != name.strip():
                raise ConfigError(f"{self._what} name must be a non-empty word, got {name!r}")
            if name in self._items:
                raise ConfigError(
                    f"{self._what} {name!r} is already registered (to {self._items[name]!r}); "
                    "names must be unique"
                )
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The object registered under ``name``; ``ConfigError`` listing the known names if none."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self._what} {name!r}; expected one of: {', '.join(self.names()) or '(none)'}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


#: LM kinds: name -> a loader ``(path, tokenizer) -> LanguageModel``. Scorer modules register
#: themselves on import (``userlibri.lm.kenlm_scorer`` registers ``kenlm-word`` and ``kenlm-token``).
LM_KINDS: Registry[Callable[..., LanguageModel]] = Registry("LM kind")


def register_lm(name: str) -> Callable[[Callable[..., LanguageModel]], Callable[..., LanguageModel]]:
    """Decorator registering an LM loader ``(path, tokenizer) -> LanguageModel`` under ``name``."""
    return LM_KINDS.register(name)


def _import_builtin_kinds() -> None:
    # Importing the scorer modules registers their kinds; kept lazy so base stays dependency-free.
    import userlibri.lm.context  # noqa: F401
    import userlibri.lm.kenlm_scorer  # noqa: F401
    import userlibri.lm.neural_word  # noqa: F401
    import userlibri.lm.onnx_lm  # noqa: F401


def load_lm(kind: str, path: str | Path, tokenizer: object | None = None) -> LanguageModel:
    """Load an LM of a registered ``kind`` from ``path`` (``tokenizer`` for sub-word scorers)."""
    if kind not in LM_KINDS:
        _import_builtin_kinds()
    return LM_KINDS.get(kind)(path, tokenizer)
