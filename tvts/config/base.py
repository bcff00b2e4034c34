"""What every params section shares: the section base class, the error type, the common value
types and constants."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PROFILES_DIR = Path(__file__).parent.parent / "profiles"
DEFAULT_PROFILE = "demo"


class ParamsError(ValueError):
    """params.yaml (or a profile) is malformed; the message lists every problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# The video containers every reader takes by default (corpus sources, downstream sets): the
# common delivery formats, MPEG-2 program / transport streams and older web formats included.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m2v",
                  ".ts", ".m2ts", ".mts", ".ogv", ".flv", ".wmv", ".3gp", ".3g2")

PositiveInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
