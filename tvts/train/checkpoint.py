"""Checkpoints: written atomically, the last few kept plus the best by a monitored metric;
loaded weights-only, with a clear error for a corrupt file or another model's checkpoint."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvts.errors import MissingInput, UserError
from tvts.paths import BEST_CHECKPOINT
from tvts.storage import atomic_path, atomic_write_text

BEST, STATE = BEST_CHECKPOINT, "checkpoints.json"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": [*random.getstate()[1], random.getstate()[2] or 0],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((3, tuple(int(x) for x in py[:-1]), py[-1] or None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32),
                         state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, list | tuple):  # older checkpoints: every device, as rank 0 saw them
            cuda = cuda[torch.cuda.current_device()]
        torch.cuda.set_rng_state(cuda)


def seed_rank(seed: int, rank: int) -> None:
    """Seed this process's random streams from the run's seed and its rank: dropout and drop
    path differ across processes (identical streams would drop the same units on every
    rank); what must agree across ranks (the initial weights) is drawn before, from the
    seed alone, and DDP broadcasts rank 0's weights anyway."""
    seed_all(seed * 1_000_003 + 7919 * (rank + 1))


def seed_all(seed: int) -> None:
    """Python's, NumPy's and torch's global generators (torch: every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class CheckpointManager:
    directory: Path
    keep: int
    monitor: str
    mode: str
    model_config: dict[str, Any]
    history: list[str] = field(default_factory=list)
    best: float | None = None

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        meta = self.directory / STATE
        if meta.exists():
            m = json.loads(meta.read_text())
            self.history, self.best = m["history"], m["best"]

    @property
    def latest(self) -> Path | None:
        """The newest full checkpoint (what a resumed run starts from)."""
        return self.directory / self.history[-1] if self.history else None

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        # the release compared this the wrong way round; the direction is explicit here
        return value > self.best if self.mode == "max" else value < self.best

    def save(self, state: dict[str, Any], name: str, metric: float | None = None) -> Path:
        """A full checkpoint (model, optimiser, RNG, position) named `name`; the oldest beyond
        `keep` are deleted. When `metric` improves, the weights also go to best.pt."""
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {**state, "model_config": json.dumps(self.model_config, sort_keys=True)}
        path = self.directory / name
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        self.history = [h for h in self.history if h != name] + [name]
        for old in self.history[: -self.keep]:
            (self.directory / old).unlink(missing_ok=True)
        self.history = self.history[-self.keep :]
        if metric is not None and self.improved(metric):
            self.best = metric
            with atomic_path(self.directory / BEST) as tmp:
                torch.save({"model": state["model"], "model_config": payload["model_config"],
                            "step": state["step"], self.monitor: metric}, tmp)
        atomic_write_text(self.directory / STATE, json.dumps(
            {"history": self.history, "best": self.best, "monitor": self.monitor,
             "mode": self.mode}, indent=2) + "\n")
        return path


def load_checkpoint(path: str | Path, model_config: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MissingInput(str(path), "a checkpoint") from None
    except Exception as e:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: "
                        f"{str(e)[:200]}); delete it to start over or point at another one"
                        ) from None
    if model_config is not None:
        saved = json.loads(state.get("model_config", "{}"))
        if saved != model_config:
            diff = sorted(k for k in set(saved) | set(model_config)
                          if saved.get(k) != model_config.get(k))
            raise UserError(f"checkpoint {path} was made by a different model configuration "
                            f"(differs in: {', '.join(diff)}); use a matching model.* config "
                            "or another checkpoint")
    return state
