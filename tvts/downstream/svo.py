"""SVO-Probes (Hendricks & Nematzadeh 2021; github.com/google-deepmind/svo_probes) in its
release layout: `svo_probes.csv` with one row per probe (sentence, pos_triplet, neg_triplet,
subj_neg / verb_neg / obj_neg flags, pos_url / neg_url, pos_image_id / neg_image_id), the
images downloaded from the URLs as `<images>/<image_id>.<ext>`. The demo generator writes
its own probes in this layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvts.downstream.files import csv_rows, plain_name
from tvts.errors import UserError

CSV_NAME = "svo_probes.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
NEG_TYPES = ("subj", "verb", "obj")
REQUIRED = ("sentence", "pos_triplet", "neg_triplet", "subj_neg", "verb_neg", "obj_neg",
            "pos_image_id", "neg_image_id")


def _flag(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def _image(images: Path, image_id: str) -> Path | None:
    if not plain_name(image_id):
        return None  # `../x` or `/abs/x` would load an image outside the images folder
    for suffix in IMAGE_SUFFIXES:
        path = images / f"{image_id}{suffix}"
        if path.exists():
            return path
    return None


def read_svo_probes(root: Path, images: Path | None = None, key: str = "downstream.svo"
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(probes, quarantined): a probe whose image is missing or whose negative type is not
    exactly one of subj / verb / obj is quarantined with the reason."""
    path = root / CSV_NAME
    if not path.exists():
        raise UserError(f"{key}: {path} does not exist (SVO-Probes' {CSV_NAME}, from "
                        "github.com/google-deepmind/svo_probes)")
    images = images or root / "images"
    if not images.is_dir():
        raise UserError(f"{key}: image folder {images} does not exist: download the images of "
                        f"{CSV_NAME}'s pos_url / neg_url columns there as <image_id>.jpg")
    try:
        rows = list(csv_rows(path, set(REQUIRED), "the SVO-Probes release's svo_probes.csv"))
    except UserError as e:
        raise UserError(f"{key}: {e}") from None
    probes, bad = [], []
    for i, (line, r) in enumerate(rows):
        probe_id = (r.get("") or r.get("index") or str(i)).strip() or str(i)
        kinds = [k for k in NEG_TYPES if _flag(r[f"{k}_neg"])]
        pos, neg = _image(images, r["pos_image_id"]), _image(images, r["neg_image_id"])
        reason = None
        if len(kinds) != 1:
            reason = f"negative type flags {kinds or 'none'}: exactly one of subj/verb/obj"
        elif pos is None or neg is None:
            which = r["pos_image_id"] if pos is None else r["neg_image_id"]
            reason = (f"line {line}: image id {which!r} is not a plain file name (it would "
                      f"reach outside {images})" if not plain_name(which) else
                      f"image {which} not found in {images} (download it as "
                      f"{images}/{which}.jpg)")
        if reason:
            bad.append({"video_id": f"svo_probes/{probe_id}", "uri": str(pos or neg or ""),
                        "stage": "downstream", "reason": reason})
            continue
        probes.append({"probe_id": probe_id, "sentence": r["sentence"], "neg_type": kinds[0],
                       "pos_triplet": r["pos_triplet"], "neg_triplet": r["neg_triplet"],
                       "pos_uri": str(pos), "neg_uri": str(neg)})
    return probes, bad
