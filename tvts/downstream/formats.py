"""Adapters for the official releases of the downstream benchmarks, each read as released.

An adapter takes the set's name, the annotation root and the clips folder, finds the
annotation files by their released names, and returns one row per annotated item. A row whose
clip is not found keeps the path it was expected at in `uri` and a `missing` reason: the stage
quarantines it and goes on. A missing annotation file is one clear error naming where it looked;
a malformed one is one error naming the file, the line (or key) and what was expected
(`files`). Each row carries `source` (file and line or entry) so that a clip listed twice is
reported with both places (`manifests.check_unique`).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tvts.config import VIDEO_SUFFIXES
from tvts.downstream.files import (
    csv_rows,
    field,
    integer,
    lines,
    number,
    plain_name,
    read_json,
    read_text,
)
from tvts.errors import UserError
from tvts.storage import walk_files

Row = dict[str, Any]


def row(name: str, item_id: str, uri: Path | str, split: str | None, label: str | None = None,
        captions: Iterable[str] = (), missing: str | None = None, source: str = "") -> Row:
    return {"downstream_set": name, "downstream_id": item_id, "uri": str(uri), "split": split,
            "label": label, "captions": list(captions), "missing": missing, "source": source}


def at(path: Path, line: int | str) -> str:
    """Where a row comes from, for messages: `file, line N` or `file, entry N`."""
    return f"{path}, {line if isinstance(line, str) else f'line {line}'}"


def find_file(root: Path, names: Iterable[str], what: str, key: str) -> Path:
    """The first of `names` (relative to root) that exists, else a clear error."""
    tried = []
    for name in names:
        path = root / name
        if path.is_file():
            return path
        tried.append(str(path))
    raise UserError(f"{key}: no {what} found; looked for {', '.join(tried)}")


def optional_file(root: Path, names: Iterable[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


def pick_dir(root: Path, videos: str | None, candidates: Iterable[str]) -> Path:
    """The clips folder: the one given, else the first candidate under root that exists."""
    if videos:
        return Path(videos)
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return root


class ClipIndex:
    """Every video file under a folder, by file name and by stem (one walk, any depth)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        self.broken: dict[str, str] = {}  # file name -> why it leads to no file
        if folder.is_dir():
            files, unlisted = walk_files(folder)
            for p in files:
                self.by_name.setdefault(p.name, p)
                if p.suffix.lower() in VIDEO_SUFFIXES:
                    self.by_stem.setdefault(p.stem, p)
            for u in unlisted:
                self.broken.setdefault(u.path.name, u.reason)

    def find(self, name: str) -> Path | None:
        """By exact file name, then by stem (a name given without or with another extension)."""
        hit = self.by_name.get(name)
        if hit is not None:
            return hit
        stem = Path(name).stem if Path(name).suffix.lower() in VIDEO_SUFFIXES else name
        return self.by_stem.get(stem)

    def locate(self, name: str, expected: Path) -> tuple[Path, str | None]:
        if not plain_name(name):
            # `../100000` would otherwise resolve by its stem to clip 100000
            return expected, (f"id {name!r} is not a plain file name (a folder part would "
                              "reach outside the clips folder)")
        hit = self.find(name)
        if hit is not None:
            return hit, None
        if name in self.broken:
            return expected, f"clip unreadable: {self.broken[name]}"
        return expected, f"clip not found: expected {expected}"


# ---------------------------------------------------------------- Something-Something v2
def read_ssv2(name: str, root: Path, videos: str | None = None, split: int = 1) -> list[Row]:
    """Labels JSON {template: index}; train/validation JSON (id, template with brackets, label,
    placeholders); test JSON (ids only). Original `something-something-v2-*.json` names or the
    later `labels/*.json`. Clips `<id>.webm` under `20bn-something-something-v2/` (the
    release's archive) or `videos/`."""
    key = f"downstream.sets.{name}"
    names = ("{}.json", "labels/{}.json", "something-something-v2-{}.json")
    labels_path = find_file(root, [n.format("labels") for n in names], "SSV2 labels JSON", key)
    classes = read_json(labels_path, dict)
    clips = pick_dir(root, videos, ("20bn-something-something-v2", "videos"))
    index = ClipIndex(clips)
    rows = []
    found_any = False
    for part, split_name in (("train", "train"), ("validation", "val"), ("test", "test")):
        path = optional_file(root, [n.format(part) for n in names])
        if path is None:
            continue
        found_any = True
        for i, item in enumerate(read_json(path, list)):
            where = f"entry {i}"
            item_id = str(field(item, "id", path, where, (str, int)))
            uri, missing = index.locate(f"{item_id}.webm", clips / f"{item_id}.webm")
            label = None
            template = field(item, "template", path, where, optional=True)
            if template is not None:
                label = template.replace("[", "").replace("]", "")
                if label not in classes:
                    missing = missing or f"template {label!r} is not in {labels_path.name}"
            elif split_name != "test":
                missing = missing or f"no template (the label) in {at(path, where)}"
            caption = field(item, "label", path, where, optional=True)
            rows.append(row(name, item_id, uri, split_name, label, [caption] if caption else [],
                            missing, at(path, where)))
    if not found_any:
        raise UserError(f"{key}: no SSV2 train/validation/test JSON under {root} "
                        f"(looked for {', '.join(n.format('train') for n in names)}, ...)")
    return rows


# ---------------------------------------------------------------- Kinetics-400
def _k400_stem(youtube_id: str, start: float, end: float) -> str:
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


# Each split's annotation file as the releases name it: the 2017 tarballs
# (kinetics_train/kinetics_train.csv, ...), DeepMind's kinetics400.tar.gz (kinetics400/
# train.csv, validate.csv, test.csv), the ActivityNet crawler's copies (kinetics-400_*.csv),
# the CVDF 2020 release (annotations/*.csv, under k400/ when unpacked whole), and the
# MMAction2 preparation script's renames (kinetics_{train,val,test}.csv).
K400_FILES = {
    "train": ("kinetics_train.csv", "kinetics_train/kinetics_train.csv",
              "kinetics400/train.csv", "kinetics_400_train.csv", "kinetics-400_train.csv",
              "annotations/train.csv", "k400/annotations/train.csv", "train.csv"),
    "val": ("kinetics_val.csv", "kinetics_val/kinetics_val.csv", "kinetics400/validate.csv",
            "kinetics_400_val.csv", "kinetics-400_val.csv", "annotations/val.csv",
            "k400/annotations/val.csv", "val.csv", "validate.csv"),
    "test": ("kinetics_test.csv", "kinetics_test/kinetics_test.csv", "kinetics400/test.csv",
             "kinetics_400_test.csv", "kinetics-400_test.csv", "annotations/test.csv",
             "k400/annotations/test.csv", "test.csv"),
}


def read_k400(name: str, root: Path, videos: str | None = None, split: int = 1) -> list[Row]:
    """The 2017 CSVs (`label,youtube_id,time_start,time_end,split,is_cc`, quoted multi-word
    labels, test without label) or the 2020 layout (`annotations/{train,val,test}.csv`, no
    `is_cc`), under any of the releases' names (`K400_FILES`). Clips
    `<youtube_id>_<start:06d>_<end:06d>.mp4`, flat or in per-label or per-split folders."""
    key = f"downstream.sets.{name}"
    clips = pick_dir(root, videos, ("videos",))
    index = ClipIndex(clips)
    rows: list[Row] = []
    for split_name, candidates in K400_FILES.items():
        path = optional_file(root, candidates)
        if path is None:
            continue
        need = {"youtube_id", "time_start", "time_end"} | ({"label"} if split_name != "test"
                                                           else set())
        for line, r in csv_rows(path, need, "a Kinetics CSV"):
            start = number(r["time_start"], path, line, "time_start")
            end = number(r["time_end"], path, line, "time_end")
            stem = _k400_stem(r["youtube_id"].strip(), start, end)
            label = (r.get("label") or "").strip() or None
            uri, missing = index.locate(stem, clips / split_name / f"{stem}.mp4")
            if label is None and split_name != "test":
                missing = missing or f"empty label in {at(path, line)}"
            rows.append(row(name, stem, uri, split_name, label, (), missing, at(path, line)))
    if not rows:
        raise UserError(f"{key}: no Kinetics-400 CSV under {root} (looked for "
                        f"{', '.join(K400_FILES['train'])}, and val / test)")
    return rows


# ---------------------------------------------------------------- UCF-101
def read_ucf101(name: str, root: Path, videos: str | None = None, split: int = 1) -> list[Row]:
    """`ucfTrainTestlist/`: classInd.txt, trainlistNN.txt (`Class/v_..avi N`), testlistNN.txt
    (`Class/v_..avi`, label from the folder); CRLF line ends. Clips under `UCF-101/`. A label
    that classInd.txt does not hold quarantines its clip."""
    key = f"downstream.sets.{name}"
    lists = next((root / d for d in ("ucfTrainTestlist",
                                     "UCF101TrainTestSplits-RecognitionTask/ucfTrainTestlist")
                  if (root / d).is_dir()), root)
    class_ind = find_file(lists, ["classInd.txt"], "UCF-101 classInd.txt", key)
    classes: dict[int, str] = {}
    for number_, ln in lines(class_ind):
        parts = ln.split(maxsplit=1)
        if len(parts) != 2:
            raise UserError(f"{class_ind}, line {number_}: {ln!r}; expected `<index> <Class>`")
        classes[integer(parts[0], class_ind, number_, "class index")] = parts[1]
    known = set(classes.values())
    clips = pick_dir(root, videos, ("UCF-101", "videos"))
    index = ClipIndex(clips)
    rows = []
    for part, split_name in (("trainlist", "train"), ("testlist", "test")):
        path = find_file(lists, [f"{part}{split:02d}.txt"], f"UCF-101 {part} of split {split}",
                         key)
        for line, ln in lines(path):
            parts = ln.split()
            if len(parts) > 2 or (part == "trainlist" and len(parts) != 2):
                raise UserError(f"{path}, line {line}: {ln!r}; expected `<Class>/<clip>.avi"
                                f"{' <index>' if part == 'trainlist' else ''}`")
            rel = parts[0]
            folder = rel.split("/")[0] if "/" in rel else None
            missing = None
            if len(parts) == 2:
                label = classes.get(integer(parts[1], path, line, "class index"))
                if label is None:
                    missing = f"class index {parts[1]} is not in {class_ind.name}"
            else:
                label = folder if folder in known else None
                if label is None:
                    missing = (f"folder {folder!r} is not a class of {class_ind.name}"
                               if folder else "no class folder in the path")
            if ".." in Path(rel).parts:
                clip_missing = f"path {rel!r} leaves the clips folder"
                uri = clips / Path(rel).name
            else:
                uri, clip_missing = index.locate(Path(rel).name, clips / rel)
            rows.append(row(name, Path(rel).stem, uri, split_name, label, (),
                            clip_missing or missing, at(path, line)))
    return rows


# ---------------------------------------------------------------- HMDB-51
def read_hmdb51(name: str, root: Path, videos: str | None = None, split: int = 1) -> list[Row]:
    """`testTrainMulti_7030_splits/<class>_test_split<N>.txt`, lines `name.avi 1|2|0 ` (1 train,
    2 test, 0 not in this split: left out). Clips `<class>/<name>.avi` under `hmdb51_org/`."""
    key = f"downstream.sets.{name}"
    lists = next((root / d for d in ("testTrainMulti_7030_splits", "splits",
                                     "test_train_splits/testTrainMulti_7030_splits")
                  if (root / d).is_dir()), root)
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in lists.glob(f"*{suffix}"))
    if not files:
        raise UserError(f"{key}: no HMDB-51 split files *{suffix} in {lists}")
    clips = pick_dir(root, videos, ("hmdb51_org", "videos"))
    index = ClipIndex(clips)
    rows = []
    for path in files:
        label = path.name[: -len(suffix)]
        for line, ln in lines(path):
            parts = ln.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise UserError(f"{path}, line {line}: {ln!r}; expected `<clip>.avi <0|1|2>` "
                                "(1 train, 2 test, 0 not in this split)")
            clip, flag = parts
            split_name = {"1": "train", "2": "test"}.get(flag)
            if split_name is None:
                continue
            uri, missing = index.locate(clip, clips / label / clip)
            rows.append(row(name, Path(clip).stem, uri, split_name, label, (), missing,
                            at(path, line)))
    return rows


# ---------------------------------------------------------------- MSR-VTT
def read_msrvtt(name: str, root: Path, videos: str | None = None, split: int = 1) -> list[Row]:
    """`MSR_VTT.json` (videos with `split`, all sentences; CLIP4Clip's copy is
    `msrvtt_data/MSRVTT_data.json`). With the JSFusion 1k-A test CSV (`MSRVTT_JSFUSION_test.csv`:
    key, vid_key, video_id, sentence) the test split is its 1,000 videos with one sentence each
    (the standard retrieval protocol), and with the 9k list (`MSRVTT_train.9k.csv` or
    `train_list_jsfusion.txt`) the train split is those videos. Without them: the JSON's splits
    and every sentence. Clips `videos/all/<video_id>.mp4`."""
    key = f"downstream.sets.{name}"
    meta_path = find_file(root, ["MSR_VTT.json", "annotation/MSR_VTT.json", "MSRVTT_data.json",
                                 "msrvtt_data/MSRVTT_data.json"],
                          "MSR-VTT annotation MSR_VTT.json", key)
    meta = read_json(meta_path, dict)
    captions: dict[str, list[str]] = {}
    for i, s in enumerate(field(meta, "sentences", meta_path, "top level", list)):
        where = f"sentences[{i}]"
        vid = field(s, "video_id", meta_path, where)
        captions.setdefault(vid, []).append(field(s, "caption", meta_path, where))
    splits: dict[str, str | None] = {}
    where_of: dict[str, str] = {}
    for i, v in enumerate(field(meta, "videos", meta_path, "top level", list)):
        vid = field(v, "video_id", meta_path, f"videos[{i}]")
        split_name = field(v, "split", meta_path, f"videos[{i}]", optional=True)
        splits[vid] = {"validate": "val"}.get(split_name, split_name)
        where_of[vid] = at(meta_path, f"videos[{i}]")
    # the protocol lists sit beside the JSON (CLIP4Clip's msrvtt_data/ holds all three)
    beside = meta_path.parent.relative_to(root)
    test_csv = optional_file(root, [str(beside / "MSRVTT_JSFUSION_test.csv"),
                                    "MSRVTT_JSFUSION_test.csv",
                                    "high-quality/structured-symlinks/MSRVTT_JSFUSION_test.csv"])
    train_9k = optional_file(root, [str(beside / "MSRVTT_train.9k.csv"), "MSRVTT_train.9k.csv",
                                    "train_list_jsfusion.txt"])
    test_sentence: dict[str, str] = {}
    if test_csv is not None:
        for line, r in csv_rows(test_csv, {"video_id", "sentence"}, "the JSFusion test CSV"):
            test_sentence[r["video_id"]] = r["sentence"]
            where_of[r["video_id"]] = at(test_csv, line)
        splits = {vid: None for vid in splits}
        if train_9k is not None:
            if train_9k.suffix == ".csv":
                listed = [(line, r["video_id"]) for line, r in
                          csv_rows(train_9k, {"video_id"}, "the 9k train CSV")]
            else:
                listed = list(lines(train_9k))
            for line, vid in listed:
                if splits.get(vid) == "train":
                    raise UserError(f"{at(train_9k, line)}: video {vid!r} is listed twice "
                                    f"(first at {where_of[vid]})")
                splits[vid] = "train"
                where_of[vid] = at(train_9k, line)
        for vid in test_sentence:
            if splits.get(vid) == "train":
                raise UserError(f"video {vid!r} is in both {where_of[vid]} (train) and "
                                f"{test_csv} (test): the test set would leak into training")
            splits[vid] = "test"
    clips = pick_dir(root, videos, ("videos/all", "videos", "MSRVTT/videos/all"))
    index = ClipIndex(clips)
    rows = []
    for vid, split_name in splits.items():
        if test_csv is not None and split_name is None:
            continue  # outside both protocol lists
        caps = [test_sentence[vid]] if vid in test_sentence else captions.get(vid, [])
        uri, missing = index.locate(vid, clips / f"{vid}.mp4")
        rows.append(row(name, vid, uri, split_name, None, caps, missing, where_of[vid]))
    return rows


# ---------------------------------------------------------------- DiDeMo
def read_didemo(name: str, root: Path, videos: str | None = None, split: int = 1) -> list[Row]:
    """`{train,val,test}_data.json`: one entry per moment (`video`, `description`, `times`);
    a video's query is the paragraph of all its descriptions, joined in file order. File
    names may come with or without their extension."""
    key = f"downstream.sets.{name}"
    clips = pick_dir(root, videos, ("videos",))
    index = ClipIndex(clips)
    rows, found = [], False
    for split_name in ("train", "val", "test"):
        path = optional_file(root, [f"{split_name}_data.json", f"data/{split_name}_data.json"])
        if path is None:
            continue
        found = True
        paragraphs: dict[str, list[str]] = {}
        first: dict[str, str] = {}
        for i, item in enumerate(read_json(path, list)):
            video = field(item, "video", path, f"entry {i}")
            text = field(item, "description", path, f"entry {i}")
            paragraphs.setdefault(video, []).append(text.strip())
            first.setdefault(video, f"entry {i}")
        for video, descriptions in paragraphs.items():
            uri, missing = index.locate(video, clips / video)
            rows.append(row(name, video, uri, split_name, None, [" ".join(descriptions)],
                            missing, at(path, first[video])))
    if not found:
        raise UserError(f"{key}: no DiDeMo {{train,val,test}}_data.json under {root}")
    return rows


# ---------------------------------------------------------------- MSVD
class _CaptionsUnpickler(pickle.Unpickler):
    """Admits dicts, lists and strings only: anything that names a class or a function (the
    way a pickle runs code) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a captions pickle holds "
                                     "only dicts, lists and strings")


def _plain(obj: Any, depth: int = 0) -> bool:
    if isinstance(obj, str):
        return True
    if depth > 4:
        return False
    if isinstance(obj, list):
        return all(_plain(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in obj.items())
    return False


def load_captions_pickle(path: Path) -> dict[str, Any]:
    """`raw-captions.pkl`, read without running code (pickle can execute anything)."""
    try:
        # from memory: a length field larger than the file then fails as truncated data
        # instead of allocating what it claims
        data = _CaptionsUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as e:  # garbage bytes raise anything, MemoryError included
        raise UserError(f"{path}: not a captions pickle this reader accepts "
                        f"({type(e).__name__}: {e}); expected a "
                        "dict of video id -> list of captions (strings or lists of words)"
                        ) from None
    if not isinstance(data, dict) or not _plain(data):
        raise UserError(f"{path}: expected a dict of video id -> list of captions, made of "
                        "dicts, lists and strings only")
    return data


def read_msvd(name: str, root: Path, videos: str | None = None, split: int = 1) -> list[Row]:
    """`raw-captions.pkl` ({video_id: [[word, ...], ...]}) + `{train,val,test}_list.txt`;
    every caption of a clip is kept (each a query). Clips `YouTubeClips/<id>.avi`."""
    key = f"downstream.sets.{name}"
    caps_path = find_file(root, ["raw-captions.pkl", "msvd_data/raw-captions.pkl"],
                          "MSVD raw-captions.pkl", key)
    caps = load_captions_pickle(caps_path)
    clips = pick_dir(root, videos, ("YouTubeClips", "videos"))
    index = ClipIndex(clips)
    rows, found = [], False
    for split_name in ("train", "val", "test"):
        path = optional_file(root, [f"{split_name}_list.txt", f"msvd_data/{split_name}_list.txt"])
        if path is None:
            continue
        found = True
        for line, vid in lines(path):
            texts = []
            for c in caps.get(vid, []) if isinstance(caps.get(vid), list) else [caps.get(vid)]:
                if not (isinstance(c, str) or (isinstance(c, list)
                                               and all(isinstance(w, str) for w in c))):
                    raise UserError(f"{caps_path}: the captions of {vid!r} are "
                                    f"{caps.get(vid)!r}; expected a list of captions (strings "
                                    "or lists of words)")
                texts.append(c if isinstance(c, str) else " ".join(c))
            uri, missing = index.locate(vid, clips / f"{vid}.avi")
            rows.append(row(name, vid, uri, split_name, None, texts, missing, at(path, line)))
    if not found:
        raise UserError(f"{key}: no MSVD {{train,val,test}}_list.txt under {root}")
    return rows


# ---------------------------------------------------------------- LSMDC
def read_lsmdc(name: str, root: Path, videos: str | None = None, split: int = 1) -> list[Row]:
    """LSMDC16 tab-separated files (clip id, 4 timestamps, sentence); a clip id may stand on
    several lines (its sentences are gathered). Clips `<movie>/<clip_id>.avi`."""
    key = f"downstream.sets.{name}"
    files = {"train": ("LSMDC16_annos_training.csv",),
             "val": ("LSMDC16_annos_val.csv",),
             "test": ("LSMDC16_challenge_1000_publictect.csv", "LSMDC16_annos_test.csv")}
    clips = pick_dir(root, videos, ("videos", "avi"))
    index = ClipIndex(clips)
    rows = []
    for split_name, candidates in files.items():
        path = optional_file(root, candidates)
        if path is None:
            continue
        sentences: dict[str, list[str]] = {}
        first: dict[str, int] = {}
        for line, ln in enumerate(read_text(path).splitlines(), 1):
            if not ln.strip():
                continue
            cols = ln.rstrip("\r").split("\t")
            if len(cols) < 6:
                raise UserError(f"{path}, line {line}: expected 6 tab-separated columns (clip "
                                f"id, 4 times, sentence), got {len(cols)} in {ln[:80]!r}")
            sentences.setdefault(cols[0], []).append(cols[5].strip())
            first.setdefault(cols[0], line)
        for clip_id, texts in sentences.items():
            movie = clip_id.rsplit("_", 1)[0]
            uri, missing = index.locate(clip_id, clips / movie / f"{clip_id}.avi")
            rows.append(row(name, clip_id, uri, split_name, None, texts, missing,
                            at(path, first[clip_id])))
    if not rows:
        raise UserError(f"{key}: no LSMDC16 annotation file under {root} (looked for "
                        f"{', '.join(c for cs in files.values() for c in cs)})")
    return rows


ADAPTERS: dict[str, Callable[..., list[Row]]] = {
    "ssv2": read_ssv2, "k400": read_k400, "ucf101": read_ucf101, "hmdb51": read_hmdb51,
    "msrvtt": read_msrvtt, "didemo": read_didemo, "msvd": read_msvd, "lsmdc": read_lsmdc}
