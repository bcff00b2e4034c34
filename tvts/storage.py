"""Local and s3:// storage: atomic writes, S3 listing, and a content-addressed object cache."""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvts.config import S3Config
from tvts.errors import UserError

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (/proc on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


# A temporary name says who writes it (`.<name>.<host>~<pid>~<random>.tmp`), so that the next
# run can tell a write that a kill left behind (its process is gone) from one in progress (a
# part of the same stage writing beside it): `sweep_leftovers`.
_TMP_OWNER = re.compile(r"\.(?P<host>[^.~/]+)~(?P<pid>\d+)~[^.]*\.tmp$")
ABANDONED_AFTER_S = 24 * 3600  # a temp of another host (or an unknown writer) left this long


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def temp_owner(pid: int | None = None) -> str:
    """`<host>~<pid>~`: what a temporary name carries of its writer."""
    return f"{_host()}~{os.getpid() if pid is None else pid}~"


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{temp_owner()}"


def _abandoned(tmp: Path, now: float) -> bool:
    m = _TMP_OWNER.search(tmp.name)
    if m and m["host"] == _host():
        try:
            os.kill(int(m["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False
    try:
        return now - tmp.lstat().st_mtime > ABANDONED_AFTER_S
    except OSError:
        return False


def sweep_leftovers(outputs: Iterable[Path]) -> list[Path]:
    """Delete the temporary files and folders (`atomic_path`, `atomic_dir`) that killed
    writes left beside or inside `outputs` (a stage's outputs): they are 0600, invisible, and
    at the paper's scale gigabytes each. A temp whose writer still runs is kept."""
    now, removed = time.time(), []
    for out in outputs:
        out = Path(out)
        candidates = list(out.parent.glob(f".{glob.escape(out.name)}.*.tmp"))
        if out.is_dir():
            candidates += list(out.rglob(".*.tmp"))
        for tmp in sorted(set(candidates)):
            if not _abandoned(tmp, now):
                continue
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; it replaces `path` only if the block succeeds, with
    the mode a plain write would give a new file (mkstemp's temp files are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _follow_umask(folder: Path) -> None:
    """Give every file and folder under `folder` the mode a plain write would: libraries that
    save through their own temporary files (Hugging Face's safetensors: 0600) do not."""
    mask = current_umask()
    for p in folder.rglob("*"):
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `path`; it becomes `path` only if the block succeeds (a
    reader never sees a half-written folder; an existing one is replaced), it and its contents
    with the modes plain writes would give."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _follow_umask(tmp)
        os.chmod(tmp, 0o777 & ~current_umask())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@dataclass(frozen=True)
class Unlisted:
    """An entry under a walked directory that is not a readable file, and why."""

    path: Path
    reason: str


def walk_files(root: str | Path) -> tuple[list[Path], list[Unlisted]]:
    """Regular files under `root` (names starting with '.' left out), following links to
    files and directories, and the entries that lead to no file: dangling links, link loops,
    unreadable directories, special files (a FIFO would block a reader). A directory reached
    twice through links is walked twice (its files are then duplicates, which the content
    hash finds); a link back to a directory above it is a loop and is walked once."""
    files: list[Path] = []
    unlisted: list[Unlisted] = []

    def visit(directory: Path, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            unlisted.append(Unlisted(directory, f"unreadable directory: {e.strerror or e}"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                st = path.stat()  # follows links
            except OSError as e:
                if entry.is_symlink():
                    kind = ("symbolic link loop" if e.errno == errno.ELOOP
                            else "dangling symbolic link")
                    unlisted.append(Unlisted(path, f"{kind}: {entry.name} -> "
                                                   f"{os.readlink(path)}"))
                else:
                    unlisted.append(Unlisted(path, f"unreadable: {e.strerror or e}"))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    unlisted.append(Unlisted(path, (
                        f"symbolic link loop: {entry.name} -> {os.readlink(path)} leads back "
                        f"to {os.path.realpath(path)}, a directory above it")))
                else:
                    visit(path, ancestors | {key})
            elif stat.S_ISREG(st.st_mode):
                files.append(path)
            else:
                unlisted.append(Unlisted(path, "not a regular file (a FIFO, socket or device)"))

    root = Path(root)
    st = root.stat()
    visit(root, frozenset({(st.st_dev, st.st_ino)}))
    return sorted(files), sorted(unlisted, key=lambda u: u.path)


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> (`bucket`, `some/key`)."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def display_path(path: str | Path) -> str:
    """Relative to the working directory when inside it, so tables move with the repo."""
    p = Path(path).absolute()
    try:
        return p.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return p.as_posix()


@functools.lru_cache(maxsize=8)
def s3_client(cfg: S3Config) -> Any:
    """One client per settings and process (clients are thread-safe; loaders call per clip)."""
    import boto3

    session = boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region)
    return session.client("s3", endpoint_url=cfg.endpoint_url)


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    size: int
    etag: str
    storage_class: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def list_s3(client: Any, uri: str) -> list[S3Object]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(uri)
    objects = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                objects.append(
                    S3Object(
                        bucket=bucket,
                        key=o["Key"],
                        size=int(o["Size"]),
                        etag=o["ETag"].strip('"'),
                        storage_class=o.get("StorageClass", "STANDARD"),
                    )
                )
    except (ClientError, BotoCoreError) as e:
        raise UserError(
            f"corpus.source = {uri!r}: cannot list the bucket ({e}). Check the bucket name, "
            "credentials (AWS_* variables or corpus.s3.profile) and corpus.s3.endpoint_url."
        ) from None
    return objects


class S3Cache:
    """Objects stored under their ETag and size: a re-run or a second key with the same
    content downloads nothing."""

    def __init__(self, root: str | Path, client: Any):
        self.root = Path(root) / "s3"
        self.client = client

    def path_for(self, obj: S3Object) -> Path:
        tag = re.sub(r"[^0-9A-Za-z-]", "", obj.etag)
        return self.root / f"{tag}-{obj.size}{Path(obj.key).suffix.lower()}"

    def fetch(self, obj: S3Object) -> Path:
        """Local copy of `obj`; raises OSError or botocore's errors when it cannot be read
        (missing, access denied, archived in Glacier, short read)."""
        target = self.path_for(obj)
        if target.exists() and target.stat().st_size == obj.size:
            return target
        with atomic_path(target) as tmp:
            self.client.download_file(obj.bucket, obj.key, str(tmp))
            got = tmp.stat().st_size
            if got != obj.size:
                raise OSError(f"short download: {got} of {obj.size} bytes")
        return target


def local_file(uri: str, s3: S3Config, cache_dir: str | Path) -> Path:
    """A local path for `uri`: the path itself, or the cached copy of an s3:// object."""
    if not is_s3(uri):
        return Path(uri)
    client = s3_client(s3)
    bucket, key = split_s3(uri)
    head = client.head_object(Bucket=bucket, Key=key)
    obj = S3Object(bucket, key, int(head["ContentLength"]), head["ETag"].strip('"'),
                   head.get("StorageClass", "STANDARD"))
    return S3Cache(cache_dir, client).fetch(obj)


def file_stamp(uri: str) -> str:
    """`size-mtime_ns` of a local file; "" for s3:// (its id is expected to name the content)."""
    if is_s3(uri):
        return ""
    try:
        st = Path(uri).stat()
    except OSError:
        return "missing"
    return f"{st.st_size}-{st.st_mtime_ns}"


def read_range(uri: str, offset: int, length: int, s3: S3Config) -> bytes:
    """`length` bytes of `uri` from `offset`: one local read or one ranged S3 GET. Fewer bytes
    come back where the file ends early (a truncated file): the caller checks the length."""
    if length <= 0:
        return b""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        reply = s3_client(s3).get_object(Bucket=bucket, Key=key,
                                         Range=f"bytes={offset}-{offset + length - 1}")
        return reply["Body"].read()
    with open(uri, "rb") as f:
        f.seek(offset)
        return f.read(length)


def join_uri(root: str | Path, name: str) -> str:
    """`root/name` for a folder or an s3:// prefix."""
    root = str(root)
    return f"{root.rstrip('/')}/{name}" if is_s3(root) else str(Path(root) / name)
