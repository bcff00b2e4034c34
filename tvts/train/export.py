"""Export what evaluation and users load without the training code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from tvts.models.tvts_model import TVTSModel
from tvts.paths import EXPORT_INFO, EXPORT_WEIGHTS
from tvts.storage import atomic_dir, atomic_path, atomic_write_text


def export_model(model: TVTSModel, out_dir: str | Path, info: dict[str, Any]) -> None:
    """`encoder/` (the video ViT: safetensors + config.json), `text_encoder/` (Hugging Face
    format, with its tokenizer), `tvts.safetensors` (all weights) + `tvts.json` (settings)."""
    from tvts.models.text_encoder import load_tokenizer

    out = Path(out_dir)
    # each folder whole or not at all, its files with the umask's modes (the Hugging Face
    # save writes model.safetensors 0600; atomic_dir mends that)
    with atomic_dir(out / "encoder") as tmp:
        model.video.save_pretrained(tmp)
    with atomic_dir(out / "text_encoder") as tmp:
        model.text.model.save_pretrained(tmp)
        load_tokenizer(model.text.name).save_pretrained(tmp)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / EXPORT_WEIGHTS) as tmp:
        save_file(state, str(tmp))
    atomic_write_text(out / EXPORT_INFO, json.dumps(info, indent=2, sort_keys=True) + "\n")
