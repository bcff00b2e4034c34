"""Two ASR engines behind one interface, both giving words with start, end and confidence.

Shared guards against Whisper's failure modes: voice activity detection decides where speech
is (no words are kept outside it, so nothing is invented on silence or music, and a word
stretched over the silence next to it is trimmed to the speech), and repeated
n-grams beyond `asr.max_repeats` in a row are cut (repetition loops).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tvts.asr.models import faster_whisper_model, openai_whisper_model
from tvts.config import AsrConfig
from tvts.errors import UserError

SAMPLE_RATE = 16000
_EDGE_PUNCT = re.compile(r"^[^\w']+|[^\w']+$")


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float
    end_s: float
    confidence: float


@dataclass
class Transcript:
    words: list[Word]
    dropped_outside_speech: int = 0
    repeats_cut: int = 0


class Engine(Protocol):
    name: str
    cfg: AsrConfig

    def words(self, audio: np.ndarray, speech: list[tuple[float, float]] | None) -> list[Word]:
        """The engine's words, unguarded; `speech` is the VAD's spans (for `vad: segment`)."""
        ...

    def transcribe(self, audio: np.ndarray) -> Transcript: ...


class _Guarded:
    """`transcribe` = VAD, the engine's words, then the shared guards (`finish`)."""

    cfg: AsrConfig

    def words(self, audio: np.ndarray, speech: list[tuple[float, float]] | None
              ) -> list[Word]:
        raise NotImplementedError

    def transcribe(self, audio: np.ndarray) -> Transcript:
        speech = None if self.cfg.vad == "off" else speech_segments(audio, self.cfg)
        if speech is not None and not speech:
            return Transcript([])
        return finish(self.words(audio, speech), speech, self.cfg)


def _device(cfg: AsrConfig) -> str:
    if cfg.device != "auto":
        return cfg.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def speech_segments(audio: np.ndarray, cfg: AsrConfig) -> list[tuple[float, float]]:
    """Speech spans in seconds (Silero VAD as shipped with faster-whisper)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    opts = VadOptions(min_silence_duration_ms=cfg.vad_min_silence_ms, speech_pad_ms=200)
    chunks = get_speech_timestamps(audio, opts, sampling_rate=SAMPLE_RATE)
    return [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in chunks]


def clean_word(text: str) -> str:
    return _EDGE_PUNCT.sub("", text.strip())


def cut_repeats(words: list[Word], max_repeats: int, max_n: int = 4) -> tuple[list[Word], int]:
    """Drop an n-gram (n <= max_n) repeated more than `max_repeats` times in a row."""
    out = list(words)
    cut = 0
    for n in range(1, max_n + 1):
        i = 0
        while i + n * (max_repeats + 1) <= len(out):
            gram = [w.word.lower() for w in out[i : i + n]]
            reps = 1
            while [w.word.lower() for w in out[i + reps * n : i + (reps + 1) * n]] == gram:
                reps += 1
            if reps > max_repeats:
                del out[i + max_repeats * n : i + reps * n]
                cut += (reps - max_repeats) * n
            i += 1
    return out, cut


MIN_SPEECH_OVERLAP_S = 0.08


def in_speech(word: Word, speech: list[tuple[float, float]]) -> Word | None:
    """`word` trimmed to the speech span it overlaps most, or None when it barely touches
    speech (a word invented on silence).

    Whisper stretches a word over the silence next to it: the first word after a pause
    often starts where the pause starts (0.0 at the start of a file), the last one ends at
    the end of the window. The voice activity detector knows where the silence is."""
    best, overlap = None, 0.0
    for a, b in speech:
        o = min(word.end_s, b) - max(word.start_s, a)
        if o > overlap:
            best, overlap = (a, b), o
    if best is None or overlap < min(MIN_SPEECH_OVERLAP_S, (word.end_s - word.start_s) / 2):
        return None
    return Word(word.word, max(word.start_s, best[0]), min(word.end_s, best[1]),
                word.confidence)


def finish(raw: list[Word], speech: list[tuple[float, float]] | None, cfg: AsrConfig
           ) -> Transcript:
    """Clean words, keep those in speech (trimmed to it), cut repetition loops."""
    words = [Word(w, s, max(e, s), c) for w0, s, e, c in
             ((r.word, r.start_s, r.end_s, r.confidence) for r in raw) if (w := clean_word(w0))]
    dropped = 0
    if speech is not None:
        kept = [t for w in words if (t := in_speech(w, speech)) is not None]
        dropped = len(words) - len(kept)
        words = kept
    words, cut = cut_repeats(words, cfg.max_repeats)
    return Transcript(words, dropped, cut)


class FasterWhisperEngine(_Guarded):
    name = "faster-whisper"

    def __init__(self, cfg: AsrConfig):
        from faster_whisper import WhisperModel

        self.cfg = cfg
        model = faster_whisper_model(cfg)
        try:
            self.model = WhisperModel(model, device=_device(cfg), compute_type=cfg.compute_type,
                                      cpu_threads=cfg.threads,
                                      download_root=cfg.model_cache_dir)
        except Exception as e:  # hub errors surface as many types
            raise UserError(f"asr.model = {cfg.model!r}: faster-whisper cannot load it ({e}). "
                            "Use a local CTranslate2 folder or 'bundled:tiny.en'.") from None

    def words(self, audio: np.ndarray, speech: list[tuple[float, float]] | None
              ) -> list[Word]:
        cfg = self.cfg
        segments, _ = self.model.transcribe(
            audio, language=cfg.language, beam_size=cfg.beam_size,
            temperature=list(cfg.temperature), word_timestamps=True,
            # speech None: audio made of speech alone (packed)
            vad_filter=cfg.vad == "segment" and speech is not None,
            vad_parameters={"min_silence_duration_ms": cfg.vad_min_silence_ms,
                            "speech_pad_ms": 200},
            no_speech_threshold=cfg.no_speech_threshold,
            compression_ratio_threshold=cfg.compression_ratio_threshold,
            log_prob_threshold=cfg.logprob_threshold,
            condition_on_previous_text=cfg.condition_on_previous_text,
            initial_prompt=cfg.initial_prompt)
        return [Word(w.word, float(w.start), float(w.end), float(w.probability))
                for seg in segments for w in (seg.words or [])]


def _alignment_heads(model, whisper_name: str | None, ct2_dir: str | None):  # type: ignore[no-untyped-def]
    """whisper's own table for a known model name; else the heads a CTranslate2 config lists."""
    import json
    from pathlib import Path

    import torch
    import whisper

    if whisper_name in whisper._ALIGNMENT_HEADS:
        model.set_alignment_heads(whisper._ALIGNMENT_HEADS[whisper_name])
        return
    config = Path(ct2_dir or "", "config.json")
    if ct2_dir and config.exists():
        heads = json.loads(config.read_text()).get("alignment_heads")
        if heads:
            mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
            for layer, head in heads:
                mask[layer, head] = True
            model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)


class WhisperTimestampedEngine(_Guarded):
    name = "whisper-timestamped"

    def __init__(self, cfg: AsrConfig):
        import torch
        import whisper

        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        target, whisper_name = openai_whisper_model(cfg)
        try:
            self.model = whisper.load_model(target, device=_device(cfg),
                                            download_root=cfg.model_cache_dir)
        except Exception as e:
            raise UserError(
                f"asr.model = {cfg.model!r}: whisper cannot load it ({e}). Use a local "
                "checkpoint or CTranslate2 folder, or 'bundled:tiny.en'.") from None
        ct2_dir = cfg.model if not cfg.model.startswith("bundled:") else None
        _alignment_heads(self.model, whisper_name, ct2_dir)

    def words(self, audio: np.ndarray, speech: list[tuple[float, float]] | None
              ) -> list[Word]:
        import whisper_timestamped

        cfg = self.cfg
        temperature = tuple(cfg.temperature) if len(cfg.temperature) > 1 else cfg.temperature[0]
        result = whisper_timestamped.transcribe(
            self.model, audio, language=cfg.language,
            vad=speech if cfg.vad == "segment" and speech is not None else False,
            beam_size=cfg.beam_size if cfg.beam_size > 1 else None,
            best_of=None, temperature=temperature,
            no_speech_threshold=cfg.no_speech_threshold,
            compression_ratio_threshold=cfg.compression_ratio_threshold,
            logprob_threshold=cfg.logprob_threshold,
            condition_on_previous_text=cfg.condition_on_previous_text,
            initial_prompt=cfg.initial_prompt, remove_empty_words=True,
            fp16=_device(cfg) == "cuda", verbose=None)
        return [Word(w["text"], float(w["start"]), float(w["end"]), float(w["confidence"]))
                for seg in result["segments"] for w in seg.get("words", [])]


ENGINES = {"faster-whisper": FasterWhisperEngine, "whisper-timestamped": WhisperTimestampedEngine}


def load_engine(cfg: AsrConfig) -> Engine:
    return ENGINES[cfg.engine](cfg)
