"""Loading Hugging Face weights offline first: a local directory, the HF cache, then the hub."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tvts.errors import UserError

# A hub id is `name` or `org/name` (letters, digits, '-', '_', '.'); anything else is a path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def looks_local(target: str) -> bool:
    """Whether `target` can only be a path (`/x`, `./x`, `~/x`, `a/b/c`, `x\\y`), not a hub id."""
    return (target.startswith(("/", ".", "~")) or "\\" in target or target.endswith("/")
            or not _HUB_ID.fullmatch(target))


def _check_folder(folder: Path, target: str, key: str, needs_weights: bool) -> None:
    if not folder.is_dir():
        raise UserError(f"{key} = {target!r}: {folder} is a file; give the folder that holds "
                        "config.json and the weights (what save_pretrained writes)")
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if needs_weights and not any((folder / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[::2]))
    if missing:
        raise UserError(f"{key} = {target!r}: the folder {folder} is incomplete: no "
                        f"{' and no '.join(missing)}. Copy the whole model folder (what "
                        "save_pretrained or `huggingface-cli download NAME --local-dir DIR` "
                        "writes) and point the key at it.")


def load_pretrained(loader: Any, target: str, key: str, alternative: str,
                    needs_weights: bool = True) -> Any:
    """`loader.from_pretrained(target)`, or a UserError naming the params `key`, how to bring
    the weights here, and `alternative` (what else the user can set). A local folder is
    checked first and never sent to the hub; a path that does not exist fails at once.
    `needs_weights`: false for what has no weights (tokenizers, image processors)."""
    path = Path(target).expanduser()
    if path.exists():
        _check_folder(path, target, key, needs_weights)
        try:
            return loader.from_pretrained(str(path))
        except (OSError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{key} = {target!r}: the folder {path} does not load as "
                            f"{getattr(loader, '__name__', 'this model')} ({first}). Check "
                            f"that it is the right kind of model, or {alternative}.") from None
    if looks_local(target):
        raise UserError(f"{key} = {target!r}: no such folder ({os.path.abspath(path)}). "
                        f"Fix the path, or {alternative}.")
    try:
        return loader.from_pretrained(target, local_files_only=True)
    except OSError:
        pass  # not cached: try the hub next
    try:
        return loader.from_pretrained(target)
    except (OSError, ValueError) as e:
        raise UserError(
            f"{key} = {target!r}: not a local directory, not in the Hugging Face cache, and the "
            f"hub could not be reached ({type(e).__name__}). Download it where there is "
            "internet (huggingface-cli download NAME --local-dir DIR), copy DIR here and set "
            f"{key} to DIR, or {alternative}."
        ) from None
