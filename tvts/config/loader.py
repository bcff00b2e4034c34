"""Loading params.yaml: profile overlay, validation, and errors that name the key path, the bad
value and what is allowed."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tvts.config.base import DEFAULT_PROFILE, PROFILES_DIR, ParamsError
from tvts.config.params import Params


# ---------------------------------------------------------------- loading
def available_profiles() -> list[str]:
    return sorted({DEFAULT_PROFILE} | {p.stem for p in PROFILES_DIR.glob("*.yaml")})


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Mapping values merge key by key; anything else in `over` replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of sections, got {data!r}")
    return data


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Keys allowed at `loc`'s parent, walking the schema by field alias."""
    current: Any = model
    for part in loc[:-1]:
        fields = {(f.alias or n): f for n, f in current.model_fields.items()}
        field = fields.get(part)
        if field is None or not isinstance(field.annotation, type):
            return []
        if not issubclass(field.annotation, BaseModel):
            return []
        current = field.annotation
    return [(f.alias or n) for n, f in current.model_fields.items()]


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(Params, e["loc"])
            hint = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            guess = f" Did you mean '{hint[0]}'?" if hint else ""
            lines.append(
                f"  {path}: unknown key.{guess} Allowed here: {', '.join(sorted(allowed))}"
            )
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if not path:  # a rule across sections: its message names the keys
                lines.append(f"  {msg}")
            elif isinstance(e.get("input"), Mapping):  # a rule across a section's keys
                lines.append(f"  {path}: {msg}")
            else:
                lines.append(f"  {path} = {e.get('input')!r}: {msg}")
    return f"{source}: invalid params\n" + "\n".join(lines)


def process_count() -> int:
    """The training processes of this run: torchrun's WORLD_SIZE, else 1."""
    return launched_world() or 1


def launched_world() -> int | None:
    """WORLD_SIZE of the launch this process belongs to (torchrun, the stages' own launch),
    None outside one."""
    try:
        return max(1, int(os.environ["WORLD_SIZE"]))
    except (KeyError, ValueError):
        return None


def resolve(raw: Mapping[str, Any], source: str = "params.yaml",
            world_size: int | None = None) -> Params:
    """Validate a params mapping: profile overlay first, then the mapping's own keys. The
    batch rules use `world_size` processes (default: this run's launch, see `launched_world`,
    else the layout `launch` asks for)."""
    context = {"world_size": world_size or launched_world()}
    profile = raw.get("profile", DEFAULT_PROFILE)
    profiles = available_profiles()
    if profile not in profiles:
        raise ParamsError(
            f"{source}: invalid params\n  profile = {profile!r}: unknown profile; "
            f"allowed: {', '.join(profiles)}"
        )
    overlay: dict[str, Any] = {}
    if profile != DEFAULT_PROFILE:
        profile_path = PROFILES_DIR / f"{profile}.yaml"
        overlay = _read_yaml(profile_path)
        try:
            Params.model_validate(overlay, context=context)
        except ValidationError as e:
            raise ParamsError(_format_errors(e, str(profile_path))) from None
    try:
        return Params.model_validate(deep_merge(overlay, raw), context=context)
    except ValidationError as e:
        raise ParamsError(_format_errors(e, source)) from None


def load_params(path: str | Path = "params.yaml", world_size: int | None = None) -> Params:
    path = Path(path)
    return resolve(_read_yaml(path), str(path), world_size)
