"""Export what evaluation and users load without the training code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from tvts.models.tvts_model import TVTSModel
from tvts.storage import atomic_path, atomic_write_text


def export_model(model: TVTSModel, out_dir: str | Path, info: dict[str, Any]) -> None:
    """`encoder/` (the video ViT: safetensors + config.json), `text_encoder/` (Hugging Face
    format, with its tokenizer), `tvts.safetensors` (all weights) + `tvts.json` (settings)."""
    out = Path(out_dir)
    model.video.save_pretrained(out / "encoder")
    model.text.model.save_pretrained(out / "text_encoder")
    from tvts.models.text_encoder import load_tokenizer

    load_tokenizer(model.text.name).save_pretrained(out / "text_encoder")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / "tvts.safetensors") as tmp:
        save_file(state, str(tmp))
    atomic_write_text(out / "tvts.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
