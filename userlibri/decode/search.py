"""The surface every streaming beam search shares: ``init_state``/``advance`` are the search's own;
``finalize``, ``partial`` and whole-utterance ``decode`` follow from them, and so does the check that
a blank id and the fused LMs fit the model's vocabulary."""

from __future__ import annotations

from typing import Any

import numpy as np

from userlibri.decode.hyp import Hypothesis
from userlibri.decode.prefix import FusionSet
from userlibri.errors import UserLibriError


class StreamingSearch:
    """Mixin: subclasses set ``blank_id``, ``fusion`` (a ``FusionSet``) and ``input_name`` and define
    ``init_state``, ``advance`` and ``_hypotheses(state, final)``."""

    blank_id: int
    fusion: FusionSet
    #: How the model output is named in error messages.
    input_name: str = "the model output"

    def init_state(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def advance(self, state: Any, frames: np.ndarray) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _hypotheses(self, state: Any, final: bool) -> list[Hypothesis]:  # pragma: no cover - abstract
        raise NotImplementedError

    def finalize(self, state: Any) -> list[Hypothesis]:
        """Hypotheses best first, each LM's end-of-sentence score included. Zero frames give the
        one empty hypothesis."""
        return self._hypotheses(state, final=True)

    def partial(self, state: Any) -> list[Hypothesis]:
        """Current hypotheses best first, without the end-of-sentence scores."""
        return self._hypotheses(state, final=False)

    def decode(self, frames: np.ndarray) -> list[Hypothesis]:
        """Whole-utterance decoding: ``finalize(advance(init_state(), frames))``."""
        return self.finalize(self.advance(self.init_state(), frames))

    def _check_vocab(self, vocab: int) -> None:
        if self.blank_id >= vocab:
            raise UserLibriError(
                f"{self.input_name}: blank id {self.blank_id} outside the vocabulary of {vocab}"
            )
        self.fusion.check_vocab(vocab, f"the {self.input_name}")
