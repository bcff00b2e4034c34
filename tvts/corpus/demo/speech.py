"""Offline speech synthesis with eSpeak NG (library shipped by the espeakng-loader wheel).

Synthesis runs in-process through the C API, which also reports where each word starts, so
the ground truth has word timings without a separate aligner.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
# Samples quieter than this (int16) count as silence when trimming the tail.
_SILENCE_LEVEL = 300


class _Event(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    )


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclass(frozen=True)
class SpokenWord:
    word: str
    start_s: float  # relative to the start of the utterance
    end_s: float


@dataclass(frozen=True)
class Utterance:
    text: str
    samples: np.ndarray  # int16 mono
    sample_rate: int
    words: tuple[SpokenWord, ...]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


class SpeechError(RuntimeError):
    """eSpeak NG could not be used or said nothing audible."""


class Synthesizer:
    """eSpeak NG with a pre-synthesised vocabulary.

    eSpeak NG's output for a sentence depends on what it said before (its wave generator
    keeps state across utterances, even across re-initialisation). So a fresh instance says
    its whole vocabulary once, in a fixed order, and then only hands out those recordings:
    the same sentence is the same samples in every process. The library is process-global,
    so there is one instance per process.
    """

    _lock = threading.Lock()
    _instance: Synthesizer | None = None

    def __init__(self, voice: str, rate_wpm: int, vocabulary: Sequence[str]):
        import espeakng_loader

        self._lib = ctypes.cdll.LoadLibrary(str(espeakng_loader.get_library_path()))
        data = str(espeakng_loader.get_data_path()).encode()
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.sample_rate <= 0:
            raise SpeechError("eSpeak NG failed to initialise (espeakng-loader data missing?)")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int]] = []
        self._callback = _Callback(self._on_audio)  # kept alive: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SpeechError(f"corpus.demo.voice = {voice!r}: eSpeak NG has no such voice")
        self._lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
        self.key = (voice, rate_wpm, tuple(vocabulary))
        self._bank = {text: self._synthesize(text) for text in vocabulary}

    @classmethod
    def get(cls, voice: str, rate_wpm: int, vocabulary: Sequence[str]) -> Synthesizer:
        with cls._lock:
            key = (voice, rate_wpm, tuple(vocabulary))
            if cls._instance is None or cls._instance.key != key:
                if cls._instance is not None:
                    cls._instance._lib.espeak_Terminate()
                cls._instance = cls(voice, rate_wpm, vocabulary)
            return cls._instance

    def _on_audio(self, wav, n, events) -> int:  # type: ignore[no-untyped-def]
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_WORD:
                self._events.append((e.text_position, e.length, e.sample))
            i += 1
        return 0

    def say(self, text: str) -> Utterance:
        try:
            return self._bank[text]
        except KeyError:
            raise SpeechError(f"{text!r} is not in the synthesiser's vocabulary") from None

    def _synthesize(self, text: str) -> Utterance:
        self._chunks, self._events = [], []
        raw = text.encode()
        self._lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _SILENCE_LEVEL)
        if loud.size == 0:
            raise SpeechError(f"eSpeak NG produced no audible speech for {text!r}")
        samples = samples[: loud[-1] + 1]
        end = len(samples) / self.sample_rate
        starts = [(text[pos - 1 : pos - 1 + length], sample / self.sample_rate)
                  for pos, length, sample in self._events]
        words = tuple(
            SpokenWord(w, s, starts[i + 1][1] if i + 1 < len(starts) else end)
            for i, (w, s) in enumerate(starts)
        )
        return Utterance(text, samples, self.sample_rate, words)
