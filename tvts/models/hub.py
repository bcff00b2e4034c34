"""Loading Hugging Face weights offline first: a local directory, the HF cache, then the hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvts.errors import UserError


def load_pretrained(loader: Any, target: str, key: str, alternative: str) -> Any:
    """`loader.from_pretrained(target)`, or a UserError naming the params `key`, how to bring
    the weights here, and `alternative` (what else the user can set)."""
    if Path(target).expanduser().exists():
        return loader.from_pretrained(str(Path(target).expanduser()))
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
