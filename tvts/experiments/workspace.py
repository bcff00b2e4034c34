"""Experiments beside the workspace: params overrides checked as the stages will read them,
and a temporary git worktree that runs the workspace's code on its data (the Prefect flow's
override runs and the ablation grids' cells run there, each kept with `dvc exp save`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tvts.config import ParamsError, resolve
from tvts.errors import UserError


def dvc_env() -> dict[str, str]:
    """This process's environment, DVC's usage reporting off (every dvc call of a run)."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1"}


def run_captured(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`cmd` in `cwd`, its output captured (the caller reads the return code)."""
    return subprocess.run(cmd, cwd=cwd, env=dvc_env(), capture_output=True, text=True)


def stage_error(output: str) -> str:
    """The stage's own error text: `error: ...` lines of the tvts CLI, else the traceback's
    last line, else DVC's ERROR lines."""
    lines = output.splitlines()
    own = [ln for ln in lines if ln.startswith("error: ")]
    if own:
        return "\n".join(own)
    tb = [i for i, ln in enumerate(lines) if ln.startswith("Traceback")]
    if tb:
        tail = [ln for ln in lines[tb[-1] + 1:] if ln and not ln.startswith((" ", "ERROR"))]
        if tail:
            return tail[-1]
    dvc = [ln for ln in lines if ln.startswith("ERROR")]
    return "\n".join(dvc) or "\n".join(lines[-5:])


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """params.yaml's mapping with each `a.b.c` key set (a leading `+` is accepted, as in
    `dvc exp run -S +a.b=1`); the schema check is left to `resolve`."""
    out = yaml.safe_load(yaml.safe_dump(raw))  # a deep copy
    for key, value in overrides.items():
        parts = key.lstrip("+").split(".")
        if not all(parts):
            raise ParamsError(f"override {key!r}: not a dotted params key such as sort.lambda")
        node = out
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ParamsError(f"override {key!r}: {p} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def checked_params(root: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overridden params.yaml mapping, validated as every stage will read it."""
    raw = yaml.safe_load((root / "params.yaml").read_text()) or {}
    merged = apply_overrides(raw, overrides)
    resolve(merged, "params.yaml with overrides " + ", ".join(
        f"{k}={v!r}" for k, v in overrides.items()))
    return merged


@contextmanager
def experiment_workspace(root: Path, params: dict[str, Any],
                         log: Callable[[str], Any] | None = None) -> Iterator[Path]:
    """A temporary git worktree with the workspace's code (HEAD plus its uncommitted changes
    and untracked files, as `dvc exp run` takes them) and `params` as params.yaml; the
    workspace's DVC cache and dvc.lock (its cached outputs checked out as links); its persisted
    uncached outputs (ASR journals, packed shards, feature caches, fine-tuning runs) as hard
    links, the other uncached outputs (reports, metrics) copied. Unchanged stages are skipped
    there, and no data is copied: the stages write those folders by rename, and an ASR
    journal becomes the experiment's own copy before it is appended to."""
    say = log or (lambda message: None)
    # under .dvc/tmp (as DVC's own temporary experiments): on the workspace's file system, so
    # its files can be hard-linked
    base = root / ".dvc" / "tmp" / "tvts-exps"
    base.mkdir(parents=True, exist_ok=True)
    # the pid in the name: a later run can tell a killed run's worktree from a live one's
    tmp = Path(tempfile.mkdtemp(prefix=f"exp-{os.getpid()}-", dir=base))
    work = tmp / "ws"
    done = run_captured(["git", "worktree", "add", "--detach", str(work), "HEAD"], root)
    if done.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot make a worktree of {root} for the experiment: "
                             f"{done.stderr.strip()} (is it a git repository with a commit?)")
    try:
        changed = _carry_uncommitted_code(root, work)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        # the workspace's record of its outputs (HEAD's may be older, or absent): with it, DVC
        # checks cached outputs out and keeps the linked uncached ones of every stage whose
        # inputs the overrides leave alone.
        if (root / "dvc.lock").is_file():
            shutil.copy2(root / "dvc.lock", work / "dvc.lock")
        cache = run_captured([sys.executable, "-m", "dvc", "cache", "dir"], root).stdout.strip()
        run_captured([sys.executable, "-m", "dvc", "cache", "dir", "--local",
              cache or str(root / ".dvc" / "cache")], work)
        # the cached outputs of the workspace's dvc.lock, linked from the shared cache (the
        # stages write by rename, so a hard link is never written through): DVC then skips
        # every stage the overrides leave alone, which its run cache alone cannot restore for
        # stages with uncached outputs (asr, pack). An output missing from the cache is left
        # out (its stage runs).
        run_captured([sys.executable, "-m", "dvc", "config", "--local", "cache.type",
              "reflink,hardlink,copy"], work)
        run_captured([sys.executable, "-m", "dvc", "checkout", "--quiet"], work)
        linked = copied = 0
        for rel, persist in uncached_outputs(root):
            n_linked, n_copied = _place(root / rel, work / rel, link=persist)
            linked, copied = linked + n_linked, copied + n_copied
        say(f"experiment workspace {work}: the workspace's code ({changed} uncommitted or "
            f"untracked file(s)), {linked} output file(s) linked, {copied} copied")
        yield work
    finally:
        run_captured(["git", "worktree", "remove", "--force", str(work)], root)
        shutil.rmtree(tmp, ignore_errors=True)


def _carry_uncommitted_code(root: Path, work: Path) -> int:
    """The workspace's uncommitted changes to tracked files and its untracked (not ignored)
    files, into the worktree of HEAD: the experiment runs the code the user has, as `dvc exp
    run` does. Returns how many files differ from HEAD."""
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=root, capture_output=True)
    if diff.stdout:
        applied = subprocess.run(["git", "apply", "--binary", "-"], cwd=work,
                                 input=diff.stdout, capture_output=True)
        if applied.returncode:
            raise UserError("cannot carry the workspace's uncommitted changes into the "
                                 f"experiment: {applied.stderr.decode().strip()}")
    names = subprocess.run(["git", "diff", "HEAD", "--name-only"], cwd=root,
                           capture_output=True, text=True).stdout.split()
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z"],
                               cwd=root, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, untracked):
        if rel.startswith(".dvc/tmp/"):
            continue
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dst)
    return len(names) + len([u for u in untracked if u and not u.startswith(".dvc/tmp/")])


def _place(src: Path, dst: Path, link: bool) -> tuple[int, int]:
    """`src` (a file or a folder) at `dst`: hard links where `link` (a copy where the file
    system refuses one), copies otherwise. Lock files are copied, never linked: a run writes
    its holder into its own (and they are part of the folder's hash, so they must be there).
    Returns (linked, copied) file counts."""
    if not src.exists():
        return 0, 0
    files = [src] if src.is_file() else [p for p in sorted(src.rglob("*")) if p.is_file()]
    linked = copied = 0
    for path in files:
        target = dst if path == src else dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        if link and path.suffix != ".lock":
            try:
                os.link(path, target)
                linked += 1
                continue
            except OSError:
                pass  # another file system, or one without hard links
        shutil.copy2(path, target)
        copied += 1
    return linked, copied


def uncached_outputs(root: Path) -> list[tuple[str, bool]]:
    """Outputs, metrics and plots dvc.yaml declares with `cache: false`, each with whether it
    is persisted between runs (`persist: true`: resumable journals, shards, caches)."""
    out = []
    for stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                if isinstance(entry, dict):
                    (path, opts), = entry.items()
                    opts = opts or {}
                    if not opts.get("cache", True) and "${" not in path:
                        out.append((path, bool(opts.get("persist", False))))
    return out


def sweep_stale_workspaces(root: Path) -> int:
    """Remove the experiment worktrees that killed runs left (their process is gone); returns
    how many. A live run's worktree is left alone."""
    base = root / ".dvc" / "tmp" / "tvts-exps"
    removed = 0
    for tmp in sorted(base.glob("exp-*")) if base.is_dir() else []:
        pid = tmp.name.split("-")[1]
        if pid.isdigit() and process_alive(int(pid)):
            continue
        run_captured(["git", "worktree", "remove", "--force", str(tmp / "ws")], root)
        shutil.rmtree(tmp, ignore_errors=True)
        removed += 1
    run_captured(["git", "worktree", "prune"], root)
    return removed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_experiment(work: Path, name: str, root: Path, stages: list[str] | None = None
                    ) -> None:
    """Keep the worktree's run as DVC experiment `name` (shown by `dvc exp show` in `root`);
    metrics and plots files are git's, not DVC's cache's, so each one there is named.
    `stages`: commit only these stages' outputs (the ones the run made; DVC refuses to save
    when any stage's output is missing, e.g. a reports page the workspace never made)."""
    untracked = [a for rel, _ in uncached_outputs(root) if (work / rel).exists()
                 and rel.startswith(("metrics/", "dvclive/")) for a in ("-I", rel)]
    saved = run_captured([sys.executable, "-m", "dvc", "exp", "save", *(stages or []), "--force",
                  "-n", name, *untracked], work)
    if saved.returncode:
        raise RuntimeError(f"dvc exp save failed: {stage_error(saved.stdout + saved.stderr)}")
