"""userlibri.decode: CTC prefix beam search and transducer modified beam search with shallow
fusion of any ``LanguageModel`` (torch-free)."""

from userlibri.decode.ctc_beam import CtcBeamSearch, CtcState, ctc_greedy
from userlibri.decode.hyp import DecoderConfig, Fusion, Hypothesis
from userlibri.decode.transducer_beam import TransducerBeamSearch, TransducerState, transducer_greedy

__all__ = [
    "CtcBeamSearch",
    "CtcState",
    "DecoderConfig",
    "Fusion",
    "Hypothesis",
    "TransducerBeamSearch",
    "TransducerState",
    "ctc_greedy",
    "transducer_greedy",
]
