"""Several short videos' speech through the engine as one window, and the words sent back.

Whisper decodes 30 s windows: a 16 s video with 6 s of speech is mostly padding. The VAD's
speech spans of a group of videos are laid end to end with a little silence between them
(a *piece* per span), transcribed once, and each word goes back to the piece under the middle
of it (the nearest piece when it falls in a gap), shifted to its video's own time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tvts.asr.engines import SAMPLE_RATE, Word

Spans = list[tuple[float, float]]


@dataclass(frozen=True)
class Piece:
    member: int  # index of the video in the packed group
    start_s: float  # in the video
    end_s: float
    at_s: float  # where it starts in the packed audio

    @property
    def packed_end_s(self) -> float:
        return self.at_s + self.end_s - self.start_s


def speech_length(spans: Spans, gap_s: float) -> float:
    """Seconds a video's speech takes in a packed window (its pieces and their gaps)."""
    return sum(e - s for s, e in spans) + gap_s * len(spans)


def windows(lengths: list[float], max_s: float) -> list[list[int]]:
    """Members (in order) split into windows of at most `max_s` s, greedily; a member longer
    than `max_s` is a window alone (the engine then decodes it as it would unpacked)."""
    out: list[list[int]] = []
    used = max_s + 1.0
    for i, n in enumerate(lengths):
        if out and used + n <= max_s:
            out[-1].append(i)
            used += n
        else:
            out.append([i])
            used = n
    return out


def pack(audios: list[np.ndarray], spans: list[Spans], gap_s: float
         ) -> tuple[np.ndarray, list[Piece]]:
    """One audio of the members' speech spans end to end, `gap_s` of silence after each."""
    parts: list[np.ndarray] = []
    pieces: list[Piece] = []
    at = 0
    gap = np.zeros(round(gap_s * SAMPLE_RATE), np.float32)
    for member, (audio, member_spans) in enumerate(zip(audios, spans, strict=True)):
        for s, e in member_spans:
            chunk = audio[round(s * SAMPLE_RATE):round(e * SAMPLE_RATE)].astype(np.float32)
            pieces.append(Piece(member, round(s * SAMPLE_RATE) / SAMPLE_RATE,
                                (round(s * SAMPLE_RATE) + len(chunk)) / SAMPLE_RATE,
                                at / SAMPLE_RATE))
            parts += [chunk, gap]
            at += len(chunk) + len(gap)
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), pieces


def unpack(words: list[Word], pieces: list[Piece], members: int) -> list[list[Word]]:
    """Each member's words in its own time, in order."""
    out: list[list[Word]] = [[] for _ in range(members)]
    if not pieces:
        return out
    for w in words:
        mid = (w.start_s + w.end_s) / 2

        def distance(p: Piece, mid: float = mid) -> float:
            return max(p.at_s - mid, mid - p.packed_end_s, 0.0)

        piece = min(pieces, key=distance)
        shift = piece.start_s - piece.at_s
        start = min(max(w.start_s + shift, piece.start_s), piece.end_s)
        end = min(max(w.end_s + shift, start), piece.end_s)
        out[piece.member].append(Word(w.word, round(start, 3), round(end, 3), w.confidence))
    return out
