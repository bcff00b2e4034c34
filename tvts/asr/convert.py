"""Convert a CTranslate2 Whisper model (as faster-whisper uses) into an openai-whisper
checkpoint (`{"dims": ..., "model_state_dict": ...}`) that whisper-timestamped loads by path.

CTranslate2 fuses self-attention Q/K/V (split in 3 along the output dim) and cross-attention
K/V (split in 2); the key projection has no bias (CTranslate2 stores zeros there); the output
projection is tied to the token embedding.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvts.asr.ct2_format import CT2FormatError, CT2Model, read_ct2
from tvts.storage import atomic_path


def _t(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr, dtype=np.float32))


def _scalar(model: CT2Model, name: str) -> int:
    return int(model.get(name).reshape(()))


def _split(arr: np.ndarray, parts: int) -> list[np.ndarray]:
    if arr.shape[0] % parts:
        raise CT2FormatError(f"fused tensor of {arr.shape[0]} rows does not split in {parts}")
    return np.split(arr, parts, axis=0)


def _attention(sd: dict, prefix: str, m: CT2Model, src: str, names: list[str],
               fused: int, start: int = 0) -> None:
    """Fused `linear_{start}` holds `names` (in order); the next linear is the output."""
    weights = _split(m.get(f"{src}/linear_{start}/weight"), fused)
    biases = _split(m.get(f"{src}/linear_{start}/bias"), fused)
    for name, w, b in zip(names, weights, biases, strict=True):
        sd[f"{prefix}.{name}.weight"] = _t(w)
        if name == "key":
            if np.abs(b).max() > 0:
                raise CT2FormatError(f"{src}: the key projection has a non-zero bias")
        else:
            sd[f"{prefix}.{name}.bias"] = _t(b)
    sd[f"{prefix}.out.weight"] = _t(m.get(f"{src}/linear_{start + 1}/weight"))
    sd[f"{prefix}.out.bias"] = _t(m.get(f"{src}/linear_{start + 1}/bias"))


def _norm(sd: dict, name: str, m: CT2Model, src: str) -> None:
    sd[f"{name}.weight"] = _t(m.get(f"{src}/gamma"))
    sd[f"{name}.bias"] = _t(m.get(f"{src}/beta"))


def _ffn(sd: dict, prefix: str, m: CT2Model, src: str) -> None:
    for i, j in ((0, 0), (1, 2)):
        sd[f"{prefix}.mlp.{j}.weight"] = _t(m.get(f"{src}/linear_{i}/weight"))
        sd[f"{prefix}.mlp.{j}.bias"] = _t(m.get(f"{src}/linear_{i}/bias"))
    _norm(sd, f"{prefix}.mlp_ln", m, f"{src}/layer_norm")


def _layers(m: CT2Model, side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    return len({match.group(1) for k in m.variables if (match := pattern.match(k))})


def ct2_to_openai(m: CT2Model) -> dict[str, Any]:
    if m.name != "WhisperSpec":
        raise CT2FormatError(f"not a Whisper model (CTranslate2 spec {m.name!r})")
    sd: dict[str, torch.Tensor] = {}
    for i in (1, 2):
        sd[f"encoder.conv{i}.weight"] = _t(m.get(f"encoder/conv{i}/weight"))
        sd[f"encoder.conv{i}.bias"] = _t(m.get(f"encoder/conv{i}/bias"))
    sd["encoder.positional_embedding"] = _t(m.get("encoder/position_encodings/encodings"))
    n_enc, n_dec = _layers(m, "encoder"), _layers(m, "decoder")
    for i in range(n_enc):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        _attention(sd, f"{dst}.attn", m, f"{src}/self_attention", ["query", "key", "value"], 3)
        _norm(sd, f"{dst}.attn_ln", m, f"{src}/self_attention/layer_norm")
        _ffn(sd, dst, m, f"{src}/ffn")
    _norm(sd, "encoder.ln_post", m, "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = _t(m.get("decoder/embeddings/weight"))
    sd["decoder.positional_embedding"] = _t(m.get("decoder/position_encodings/encodings"))
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        _attention(sd, f"{dst}.attn", m, f"{src}/self_attention", ["query", "key", "value"], 3)
        _norm(sd, f"{dst}.attn_ln", m, f"{src}/self_attention/layer_norm")
        # cross-attention: linear_0 = query, linear_1 = fused key/value, linear_2 = output
        att = f"{src}/attention"
        sd[f"{dst}.cross_attn.query.weight"] = _t(m.get(f"{att}/linear_0/weight"))
        sd[f"{dst}.cross_attn.query.bias"] = _t(m.get(f"{att}/linear_0/bias"))
        kv_w, kv_b = _split(m.get(f"{att}/linear_1/weight"), 2), _split(
            m.get(f"{att}/linear_1/bias"), 2)
        sd[f"{dst}.cross_attn.key.weight"] = _t(kv_w[0])
        if np.abs(kv_b[0]).max() > 0:
            raise CT2FormatError(f"{att}: the key projection has a non-zero bias")
        sd[f"{dst}.cross_attn.value.weight"] = _t(kv_w[1])
        sd[f"{dst}.cross_attn.value.bias"] = _t(kv_b[1])
        sd[f"{dst}.cross_attn.out.weight"] = _t(m.get(f"{att}/linear_2/weight"))
        sd[f"{dst}.cross_attn.out.bias"] = _t(m.get(f"{att}/linear_2/bias"))
        _norm(sd, f"{dst}.cross_attn_ln", m, f"{att}/layer_norm")
        _ffn(sd, dst, m, f"{src}/ffn")
    _norm(sd, "decoder.ln", m, "decoder/layer_norm")
    conv1 = m.get("encoder/conv1/weight")
    dims = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(sd["encoder.positional_embedding"].shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": _scalar(m, "encoder/num_heads"),
        "n_audio_layer": n_enc,
        "n_vocab": int(sd["decoder.token_embedding.weight"].shape[0]),
        "n_text_ctx": int(sd["decoder.positional_embedding"].shape[0]),
        "n_text_state": int(sd["decoder.token_embedding.weight"].shape[1]),
        "n_text_head": _scalar(m, "decoder/num_heads"),
        "n_text_layer": n_dec,
    }
    return {"dims": dims, "model_state_dict": sd}


def convert_ct2_dir(ct2_dir: str | Path, cache_dir: str | Path) -> Path:
    """Convert once: the checkpoint is cached under the hash of `model.bin`."""
    model_bin = Path(ct2_dir) / "model.bin"
    if not model_bin.exists():
        raise FileNotFoundError(f"{ct2_dir} holds no model.bin: not a CTranslate2 model")
    h = hashlib.blake2b(digest_size=8)
    with open(model_bin, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    target = Path(cache_dir) / "whisper" / f"openai-{h.hexdigest()}.pt"
    if target.exists():
        return target
    checkpoint = ct2_to_openai(read_ct2(model_bin))
    with atomic_path(target) as tmp:
        torch.save(checkpoint, tmp)
    return target
