"""Per-video results grouped into shard files: resumable per video, never half-read.

Each shard is an append-only JSON-lines journal. A record is one line written in one call and
flushed; a line without its newline (a write cut by kill -9) is cut off before the next append
and skipped on reading. Records carry the fingerprint of the ASR settings, so a run with other
settings does not reuse them. Videos map to shards by a hash of their id, so the same layout
lets machines split the work by shard.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tvts.errors import UserError
from tvts.sharding import shard_of

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per journal is up to the user
    fcntl = None  # type: ignore[assignment]


class ShardJournal:
    def __init__(self, directory: str | Path, num_shards: int, fingerprint: str):
        self.dir = Path(directory)
        self.num_shards = num_shards
        self.fingerprint = fingerprint
        self._repaired: set[Path] = set()

    def path(self, shard: int) -> Path:
        return self.dir / f"shard-{shard:05d}.jsonl"

    @contextlib.contextmanager
    def lock(self, shards: Iterable[int]) -> Iterator[None]:
        """Hold the write locks of `shards` for the block, or fail at once naming the process
        that holds one. Parts of one run (`--shards i/n`) lock disjoint shards and run side
        by side; two runs over the same shards cannot. The OS drops a lock when its holder
        dies, so a killed run leaves none behind."""
        if fcntl is None:
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        held: list[Any] = []
        try:
            for shard in sorted(set(shards)):
                path = self.path(shard).with_suffix(".lock")
                f = open(path, "a+")  # noqa: SIM115 (held past this block, closed below)
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    f.close()
                    raise UserError(
                        f"{self.path(shard)} is being written by {holder}: another ASR run "
                        f"works on this journal ({self.dir}). Wait for it to end or stop it; "
                        "parts of one run split the shards with --shards i/n.") from None
                held.append(f)
                f.seek(0)
                f.truncate()
                since = datetime.datetime.now().isoformat(timespec="seconds")
                f.write(f"pid {os.getpid()} on {socket.gethostname()} since {since}\n")
                f.flush()
            yield
        finally:
            for f in held:
                f.close()  # closing releases the lock

    def _lines(self, path: Path) -> Iterator[dict[str, Any]]:
        with open(path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    return  # a write cut short: not a record
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if rec.get("fingerprint") == self.fingerprint:
                    yield rec

    def load(self) -> dict[str, dict[str, Any]]:
        """The finished records of every shard, by video id (the last one wins)."""
        records: dict[str, dict[str, Any]] = {}
        for path in sorted(self.dir.glob("shard-*.jsonl")):
            for rec in self._lines(path):
                records[rec["video_id"]] = rec
        return records

    def _repair(self, path: Path) -> None:
        """Cut a trailing partial line so the next record starts on a line of its own; a
        journal hard-linked from another workspace (an experiment's, see flows/pipeline.py)
        becomes this journal's own copy first, so appending never writes into the other."""
        if path in self._repaired or not path.exists():
            self._repaired.add(path)
            return
        if path.stat().st_nlink > 1:
            own = path.with_name(f".{path.name}.{os.getpid()}.own")
            shutil.copy2(path, own)
            os.replace(own, path)
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
        self._repaired.add(path)

    def append(self, record: dict[str, Any]) -> None:
        record = {**record, "fingerprint": self.fingerprint}
        path = self.path(shard_of(record["video_id"], self.num_shards))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._repair(path)
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with open(path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
