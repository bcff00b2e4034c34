"""ASR scoring against a reference script: word error rate and word-timing error."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_NON_WORD = re.compile(r"[^a-z0-9']+")


def normalise(word: str) -> str:
    return _NON_WORD.sub("", word.lower())


@dataclass(frozen=True)
class Alignment:
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int
    # (reference index, hypothesis index) of words that match exactly
    matches: tuple[tuple[int, int], ...]

    @property
    def wer(self) -> float:
        errors = self.substitutions + self.deletions + self.insertions
        return errors / max(self.reference_words, 1)


def align(reference: list[str], hypothesis: list[str]) -> Alignment:
    """Levenshtein alignment of normalised words, with the matched pairs."""
    ref = [normalise(w) for w in reference]
    hyp = [normalise(w) for w in hypothesis]
    n, m = len(ref), len(hyp)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1])
            cost[i, j] = min(sub, cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    i, j, s, d, ins = n, m, 0, 0, 0
    matches = []
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] == hyp[j - 1]:
                matches.append((i - 1, j - 1))
            else:
                s += 1
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            d, i = d + 1, i - 1
        else:
            ins, j = ins + 1, j - 1
    return Alignment(s, d, ins, n, tuple(reversed(matches)))


def start_errors(ref_starts: list[float], hyp_starts: list[float], alignment: Alignment
                 ) -> list[float]:
    """|start difference| of every matched word, in seconds."""
    return [abs(ref_starts[i] - hyp_starts[j]) for i, j in alignment.matches]


@dataclass(frozen=True)
class DemoReference:
    """What a demo video's sidecar says was spoken, and where nothing is."""

    words: list[str]
    starts: list[float]
    pauses: list[tuple[float, float]]


# Quiet spans stop this far from a sentence: a word trimmed to the detected speech may reach
# into the silence by the detector's padding (0.2 s).
PAUSE_MARGIN_S = 0.3


def demo_reference(sidecar: dict) -> DemoReference:
    """The narration's words and start times, and the quiet parts of each event's slot (before
    and after its sentence): a word there was invented."""
    words, starts, pauses = [], [], []
    for seg in sidecar["segments"]:
        if seg["kind"] != "event":
            continue
        sp = seg["speech"]
        for w in sp["words"]:
            words.append(w["word"])
            starts.append(w["start_s"])
        for a, b in ((seg["start_s"], sp["start_s"] - PAUSE_MARGIN_S),
                     (sp["end_s"] + PAUSE_MARGIN_S, seg["end_s"])):
            if b - a > 0.2:
                pauses.append((a, b))
    return DemoReference(words, starts, pauses)


def inside(start: float, end: float, spans: list[tuple[float, float]]) -> bool:
    mid = (start + end) / 2
    return any(a <= mid <= b for a, b in spans)
