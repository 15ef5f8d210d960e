"""Hotword context graph: bonuses, back-off on failed matches, overlapping phrases via failure
links (all by hand), the hotwords file, and biasing a decoder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from userlibri.decode.ctc_beam import CtcBeamSearch
from userlibri.decode.hyp import DecoderConfig
from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.lm.base import LanguageModel, load_lm
from userlibri.lm.context import ContextGraph, read_hotwords

A, B, C, D, X = 3, 4, 5, 6, 7


def _graph() -> ContextGraph:
    # "A B C" and "B C" at 1.0 per token, "A D" at 2.0 per token (so the shared "A" earns 2.0).
    return ContextGraph([[A, B, C], [B, C], [A, D]], bonus=1.0, bonuses=[1.0, 1.0, 2.0], vocab_size=10)


def _run(graph: ContextGraph, tokens: list[int]) -> tuple[list[float], float, int]:
    state, steps = graph.start_state(), []
    for t in tokens:
        s, state = graph.score(state, t)
        steps.append(s)
    return steps, graph.final_score(state), state


def test_node_scores_and_output_scores_by_hand() -> None:
    g = _graph()
    assert isinstance(g, LanguageModel)
    assert g.num_nodes == 7  # root, A, AB, ABC, AD, B, BC
    steps, final, _ = _run(g, [A, B, C])
    # A: 2.0 (max of the two phrases); B: 1.0; C: 1.0 + outputs ABC (4.0) + BC on its failure chain (2.0)
    assert steps == [2.0, 1.0, 7.0]
    assert final == -4.0  # give back the pending node score of ABC
    assert sum(steps) + final == 6.0  # both phrases matched: 4.0 + 2.0


def test_failed_partial_match_gives_the_bonus_back() -> None:
    g = _graph()
    steps, final, state = _run(g, [A, B, X])
    assert steps == [2.0, 1.0, -3.0] and state == g.start_state() and final == 0.0
    # A B then D: no "A B D", no "B D", no "D" phrase start: back to the root.
    assert _run(g, [A, B, D])[0] == [2.0, 1.0, -3.0]
    # A partial match still pending at the end is given back by final_score.
    steps, final, _ = _run(g, [X, A])
    assert steps == [0.0, 2.0] and final == -2.0


def test_failure_links_continue_a_suffix_match() -> None:
    g = _graph()
    # "A B" fails on X, but "A" then "B C": the failure link of AB is B, so B's bonus is kept.
    steps, final, _ = _run(g, [A, B, B, C])
    # A +2, B +1, second B: fail AB->B then no B->B, root->B: node(B) - node(AB) = 1 - 3 = -2;
    # C: +1 + output(BC) 2.0
    assert steps == [2.0, 1.0, -2.0, 3.0]
    assert sum(steps) + final == 2.0  # only "B C" matched


def test_completed_phrase_keeps_its_bonus_after_more_tokens() -> None:
    g = _graph()
    steps, final, _ = _run(g, [X, A, D, X, X])
    assert steps == [0.0, 2.0, 6.0, -4.0, 0.0]
    assert sum(steps) + final == 4.0
    assert g.matched(_run(g, [A, D])[2]) == 2
    assert g.matched(_run(g, [A, B, C])[2]) == 0
    assert g.matched(_run(g, [A])[2]) is None


def test_bad_phrases_are_rejected() -> None:
    with pytest.raises(ConfigError, match="empty"):
        ContextGraph([[1, 2], []])
    with pytest.raises(ConfigError, match="token id 12"):
        ContextGraph([[1, 12]], vocab_size=10)
    with pytest.raises(ConfigError, match="bonuses"):
        ContextGraph([[1, 2]], bonuses=[1.0, 2.0])
    with pytest.raises(ConfigError, match="finite"):
        ContextGraph([[1, 2]], bonus=math.inf)
    with pytest.raises(UserLibriError, match="not a node id"):
        _graph().score(99, 1)


class _CharTokenizer:
    """One id per character: ids 0-2 are special, 'A'.. map to 3.. (duck-types Tokenizer)."""

    vocab_size = 30

    def encode(self, text: str) -> list[int]:
        return [3 + ord(c) - ord("A") for c in text if c.isalpha()]


def test_hotwords_file_and_registry(tmp_path: Path) -> None:
    path = tmp_path / "hotwords.txt"
    path.write_text("# my words\nDARCY :2.5\n\nBINGLEY\n", encoding="utf-8")
    assert read_hotwords(path) == [("DARCY", 2.5), ("BINGLEY", None)]
    graph = load_lm("hotwords", path, _CharTokenizer())
    assert isinstance(graph, ContextGraph) and graph.vocab_size == 30
    steps, final, _ = _run(graph, _CharTokenizer().encode("DARCY"))
    assert steps[:-1] == [2.5] * 4 and sum(steps) + final == pytest.approx(2.5 * 5)
    bad = tmp_path / "bad.txt"
    bad.write_text("DARCY\nWICKHAM :lots\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2"):
        read_hotwords(bad)
    with pytest.raises(DataFormatError, match="no such file"):
        read_hotwords(tmp_path / "missing.txt")


def test_hotword_biases_the_decoder_and_is_kept_apart() -> None:
    # Acoustics slightly prefer token 5 over token 6 in frame 1; the hotword "3 6" turns it round.
    probs = np.full((3, 8), 0.01)
    probs[0, 3], probs[1, 5], probs[1, 6], probs[2, 0] = 0.93, 0.5, 0.44, 0.93
    lp = np.log(probs / probs.sum(axis=1, keepdims=True))
    plain = CtcBeamSearch(DecoderConfig(beam=4)).decode(lp)[0]
    assert plain.tokens == (3, 5)
    graph = ContextGraph([[3, 6]], bonus=1.0, vocab_size=8)
    biased = CtcBeamSearch(DecoderConfig(beam=4, context_weight=0.5), context=graph).decode(lp)
    best = biased[0]
    assert best.tokens == (3, 6)
    assert best.context_score == 2.0 and best.lm_score == 0.0
    assert best.score == pytest.approx(best.am_score + 0.5 * 2.0)
    # The unmatched alternative keeps no bonus at the end.
    other = {h.tokens: h for h in biased}[(3, 5)]
    assert other.context_score == 0.0
