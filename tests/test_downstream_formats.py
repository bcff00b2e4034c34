"""Each downstream adapter on fixtures written in the release's own format: quoting, CRLF line
ends, trailing spaces, empty extensions, ids that start with `-`, missing clips."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from tvts.config import DownstreamSource, resolve
from tvts.downstream.formats import ADAPTERS, load_captions_pickle
from tvts.downstream.manifests import read_set
from tvts.errors import UserError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")
    return path


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["downstream_id"]: r for r in rows}


def test_ssv2_original_names(tmp_path):
    root = tmp_path / "ssv2"
    (root).mkdir()
    (root / "something-something-v2-labels.json").write_text(json.dumps(
        {"Pushing something from left to right": "0", "Dropping something": "1"}))
    (root / "something-something-v2-train.json").write_text(json.dumps([
        {"id": "78687", "label": "pushing a pen from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a pen"]}]))
    (root / "something-something-v2-validation.json").write_text(json.dumps([
        {"id": "42326", "label": "dropping a box", "template": "Dropping [something]",
         "placeholders": ["a box"]}]))
    (root / "something-something-v2-test.json").write_text(json.dumps([{"id": "1420"}]))
    touch(root / "20bn-something-something-v2" / "78687.webm")
    touch(root / "20bn-something-something-v2" / "1420.webm")
    rows = by_id(ADAPTERS["ssv2"]("ssv2", root))
    assert rows["78687"]["label"] == "Pushing something from left to right"
    assert rows["78687"]["split"] == "train" and rows["78687"]["missing"] is None
    assert rows["78687"]["captions"] == ["pushing a pen from left to right"]
    assert rows["42326"]["split"] == "val"
    assert rows["42326"]["missing"].startswith("clip not found")
    assert rows["42326"]["uri"] == str(root / "20bn-something-something-v2" / "42326.webm")
    assert rows["1420"]["split"] == "test" and rows["1420"]["label"] is None


def test_ssv2_later_label_folder(tmp_path):
    root = tmp_path / "ssv2"
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "labels.json").write_text(json.dumps({"Dropping something": "0"}))
    (root / "labels" / "train.json").write_text(json.dumps([
        {"id": "1", "label": "dropping x", "template": "Dropping [something]",
         "placeholders": ["x"]},
        {"id": "2", "label": "y", "template": "Unknown [something]", "placeholders": ["y"]}]))
    touch(root / "videos" / "1.webm")
    touch(root / "videos" / "2.webm")
    rows = by_id(ADAPTERS["ssv2"]("ssv2", root))
    assert rows["1"]["missing"] is None and rows["1"]["label"] == "Dropping something"
    assert "not in labels.json" in rows["2"]["missing"]


def test_ssv2_missing_annotations_name_the_files(tmp_path):
    with pytest.raises(UserError, match=r"something-something-v2-labels\.json"):
        ADAPTERS["ssv2"]("ssv2", tmp_path)


def test_k400_2017_csv_quoting_test_without_label_and_per_label_folders(tmp_path):
    root = tmp_path / "k400"
    root.mkdir()
    (root / "kinetics-400_train.csv").write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        '"abseiling",--07WQ2iBlw,1,11,train,0\n'
        '"air drumming, loudly",-abc123,14,24,train,0\n')
    (root / "kinetics-400_test.csv").write_text(
        "youtube_id,time_start,time_end,split\nxyz,5,15,test\n")
    touch(root / "videos" / "abseiling" / "--07WQ2iBlw_000001_000011.mp4")
    touch(root / "videos" / "air drumming, loudly" / "-abc123_000014_000024.mp4")
    rows = by_id(ADAPTERS["k400"]("k400", root))
    assert rows["--07WQ2iBlw_000001_000011"]["label"] == "abseiling"
    assert rows["-abc123_000014_000024"]["label"] == "air drumming, loudly"
    assert rows["-abc123_000014_000024"]["missing"] is None
    assert rows["xyz_000005_000015"]["label"] is None
    assert rows["xyz_000005_000015"]["missing"]


def test_k400_2020_layout_flat_per_split(tmp_path):
    root = tmp_path / "k400"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\narm wrestling,-Q0abc,0,10,val\n")
    touch(root / "val" / "-Q0abc_000000_000010.mp4")
    rows = ADAPTERS["k400"]("k400", root, str(root))
    assert rows[0]["label"] == "arm wrestling" and rows[0]["split"] == "val"
    assert rows[0]["missing"] is None


def test_ucf101_split_files_with_crlf(tmp_path):
    root = tmp_path / "ucf"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 Archery\r\n")
    (lists / "trainlist01.txt").write_bytes(
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nArchery/v_Archery_g08_c01.avi 2\r\n")
    (lists / "testlist01.txt").write_bytes(b"Archery/v_Archery_g01_c01.avi\r\n")
    touch(root / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
    touch(root / "UCF-101" / "Archery" / "v_Archery_g01_c01.avi")
    rows = by_id(ADAPTERS["ucf101"]("ucf", root))
    assert rows["v_ApplyEyeMakeup_g08_c01"]["label"] == "ApplyEyeMakeup"
    assert rows["v_Archery_g01_c01"]["label"] == "Archery"  # from the folder
    assert rows["v_Archery_g01_c01"]["split"] == "test"
    assert rows["v_Archery_g08_c01"]["missing"]
    assert rows["v_Archery_g08_c01"]["uri"].endswith("UCF-101/Archery/v_Archery_g08_c01.avi")
    with pytest.raises(UserError, match=r"trainlist02\.txt"):
        ADAPTERS["ucf101"]("ucf", root, None, 2)


def test_hmdb51_split_files_with_trailing_spaces(tmp_path):
    root = tmp_path / "hmdb"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    (splits / "brush_hair_test_split1.txt").write_text(
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n"
        "Aussie_Brunette_Brushing_Hair_II_brush_hair_u_nm_np4_ri_med_3.avi 2 \n"
        "unused_clip.avi 0 \n")
    (splits / "brush_hair_test_split2.txt").write_text("other.avi 1 \n")
    touch(root / "hmdb51_org" / "brush_hair" / "April_09_brush_hair_u_nm_np1_ba_goo_0.avi")
    rows = by_id(ADAPTERS["hmdb51"]("hmdb", root))
    assert set(rows) == {"April_09_brush_hair_u_nm_np1_ba_goo_0",
                         "Aussie_Brunette_Brushing_Hair_II_brush_hair_u_nm_np4_ri_med_3"}
    first = rows["April_09_brush_hair_u_nm_np1_ba_goo_0"]
    assert first["label"] == "brush_hair" and first["split"] == "train"
    assert first["missing"] is None
    assert rows["Aussie_Brunette_Brushing_Hair_II_brush_hair_u_nm_np4_ri_med_3"]["split"] \
        == "test"
    assert [r["downstream_id"] for r in ADAPTERS["hmdb51"]("hmdb", root, None, 2)] == ["other"]


def _msrvtt(root: Path) -> None:
    root.mkdir()
    videos = [{"video_id": f"video{i}", "split": s} for i, s in
              enumerate(["train", "train", "validate", "test"])]
    sentences = [{"video_id": f"video{i}", "caption": f"caption {i}.{j}", "sen_id": 2 * i + j}
                 for i in range(4) for j in range(2)]
    (root / "MSR_VTT.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    for i in range(4):
        touch(root / "videos" / "all" / f"video{i}.mp4")


def test_msrvtt_json_splits_keep_every_caption(tmp_path):
    _msrvtt(tmp_path / "m")
    rows = by_id(ADAPTERS["msrvtt"]("m", tmp_path / "m"))
    assert rows["video2"]["split"] == "val"
    assert rows["video3"]["captions"] == ["caption 3.0", "caption 3.1"]


def test_msrvtt_1k_a_and_9k_lists(tmp_path):
    root = tmp_path / "m"
    _msrvtt(root)
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        ",key,vid_key,video_id,sentence\n0,ret0,msr3,video3,a man is talking\n"
        "1,ret1,msr2,video2,\"a dog, running\"\n")
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\n")
    rows = by_id(ADAPTERS["msrvtt"]("m", root))
    assert set(rows) == {"video0", "video2", "video3"}  # video1 is in neither list
    assert rows["video2"]["split"] == "test" and rows["video2"]["captions"] == ["a dog, running"]
    assert rows["video0"]["split"] == "train"
    assert rows["video0"]["captions"] == ["caption 0.0", "caption 0.1"]


def test_didemo_paragraphs_and_empty_extensions(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "test_data.json").write_text(json.dumps([
        {"video": "12090392@N02_13482799053_87ef417396.mov", "description": "a girl waves.",
         "times": [[0, 0]], "annotation_id": 1},
        {"video": "noext_video", "description": "a car drives by", "times": [[1, 2]],
         "annotation_id": 2},
        {"video": "12090392@N02_13482799053_87ef417396.mov", "description": "she sits down",
         "times": [[2, 3]], "annotation_id": 3}]))
    touch(root / "videos" / "12090392@N02_13482799053_87ef417396.mp4")
    touch(root / "videos" / "noext_video")
    rows = by_id(ADAPTERS["didemo"]("d", root))
    movie = rows["12090392@N02_13482799053_87ef417396.mov"]
    assert movie["captions"] == ["a girl waves. she sits down"]
    assert movie["missing"] is None and movie["uri"].endswith(".mp4")
    assert rows["noext_video"]["missing"] is None


def test_msvd_pickle_and_lists(tmp_path):
    root = tmp_path / "msvd"
    root.mkdir()
    caps = {"-4wsuPCjDBc_5_15": [["a", "cat", "plays"], ["the", "cat", "is", "playing"]],
            "abc_1_2": [["a", "man"]]}
    (root / "raw-captions.pkl").write_bytes(pickle.dumps(caps))
    (root / "train_list.txt").write_text("abc_1_2\n")
    (root / "test_list.txt").write_text("-4wsuPCjDBc_5_15\n")
    touch(root / "YouTubeClips" / "-4wsuPCjDBc_5_15.avi")
    rows = by_id(ADAPTERS["msvd"]("msvd", root))
    assert rows["-4wsuPCjDBc_5_15"]["captions"] == ["a cat plays", "the cat is playing"]
    assert rows["-4wsuPCjDBc_5_15"]["missing"] is None
    assert rows["abc_1_2"]["split"] == "train" and rows["abc_1_2"]["missing"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/tvts-pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "raw-captions.pkl"
    path.write_bytes(pickle.dumps({"v": _Exploit()}))
    with pytest.raises(UserError, match="refused to load"):
        load_captions_pickle(path)
    path.write_bytes(pickle.dumps({"v": [1, 2]}))  # plain, but not captions
    with pytest.raises(UserError, match="dicts, lists and strings"):
        load_captions_pickle(path)


def test_lsmdc_clip_on_several_lines(tmp_path):
    root = tmp_path / "lsmdc"
    root.mkdir()
    clip = "1004_Juno_00.00.32.849-00.00.35.458"
    (root / "LSMDC16_challenge_1000_publictect.csv").write_text(
        f"{clip}\t00.00.32.849\t00.00.35.458\t00.00.32.849\t00.00.35.458\tSomeone runs.\n"
        f"{clip}\t00.00.32.849\t00.00.35.458\t00.00.32.849\t00.00.35.458\tShe stops.\n")
    touch(root / "videos" / "1004_Juno" / f"{clip}.avi")
    rows = ADAPTERS["lsmdc"]("lsmdc", root)
    assert len(rows) == 1 and rows[0]["captions"] == ["Someone runs.", "She stops."]
    assert rows[0]["split"] == "test" and rows[0]["missing"] is None


def test_params_take_a_release_mapping(tmp_path):
    params = resolve({"downstream": {"sets": {"hmdb": {"format": "hmdb51", "root": "x",
                                                       "split": 2}}},
                      "evaluate": {"tasks": {"hmdb": ["linear"]}}})
    src = params.downstream.sets["hmdb"]
    assert isinstance(src, DownstreamSource) and src.split == 2
    with pytest.raises(ValueError, match="format"):
        resolve({"downstream": {"sets": {"x": {"format": "nope", "root": "x"}}}})
    with pytest.raises(ValueError, match=r"evaluate\.tasks"):
        resolve({"evaluate": {"tasks": {"nope": ["linear"]}}})
    with pytest.raises(UserError, match="root"):
        read_set("hmdb", src)


def test_default_tasks_follow_each_sets_kind():
    params = resolve({"downstream": {"sets": {
        "ssv2": "demo", "mine": "/x", "m": {"format": "msvd", "root": "r"},
        "k": {"format": "k400", "root": "r"}}}})
    frozen = ["linear", "attentive", "v2v", "finetune"]
    assert params.eval_tasks() == {"ssv2": frozen, "mine": frozen,
                                   "m": ["t2v", "t2v_finetune"], "k": frozen}


def test_stage_quarantines_a_missing_clip_with_its_expected_path(tmp_path):
    from tvts.stages import downstream as downstream_stage
    from tvts.tables import read_table

    from .conftest import make_video

    root = tmp_path / "ucf"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 Archery\n")
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g08_c01.avi 1\n")
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    (root / "UCF-101" / "Archery").mkdir(parents=True)
    # an MP4 under the release's .avi name: the probe reads the content, not the name
    make_video(tmp_path / "clip.mp4", audio=False).rename(
        root / "UCF-101" / "Archery" / "v_Archery_g08_c01.avi")
    params = resolve({"downstream": {"svo": None,
                                     "sets": {"ucf": {"format": "ucf101", "root": str(root)}},
                                     "workers": 1}})
    downstream_stage.run(params, tmp_path / "out", tmp_path / "m.json")
    man = read_table(tmp_path / "out" / "ucf.parquet", "downstream")
    assert man["downstream_id"].to_list() == ["v_Archery_g08_c01"]
    assert man["duration_s"][0] > 1.0
    bad = read_table(tmp_path / "out" / "quarantine.parquet", "quarantine").row(0, named=True)
    expected = root / "UCF-101" / "Archery" / "v_Archery_g01_c01.avi"
    assert bad["video_id"] == "ucf/v_Archery_g01_c01" and bad["uri"] == str(expected)
    assert "clip not found" in bad["reason"]


def test_links_in_a_set_are_followed_and_broken_ones_reported(tmp_path):
    clips, elsewhere = tmp_path / "clips", tmp_path / "elsewhere"
    touch(clips / "jumping" / "a.mp4")
    touch(elsewhere / "b.mp4")
    (clips / "waving").symlink_to(elsewhere, target_is_directory=True)
    (clips / "jumping" / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (clips / "jumping" / "loop").symlink_to(clips, target_is_directory=True)
    rows = by_id(read_set("mine", str(clips)))
    assert rows["jumping/a"]["missing"] is None and rows["waving/b"]["label"] == "waving"
    assert rows["jumping/gone"]["missing"].startswith("dangling symbolic link: gone.mp4 ->")
    assert rows["jumping/loop"]["missing"].startswith("symbolic link loop: loop ->")
    # a release layout: a clip behind a broken link says so, not "not found"
    root = tmp_path / "ucf"
    (root / "ucfTrainTestlist").mkdir(parents=True)
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("1 Archery\n")
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text("Archery/v_A_g01_c01.avi 1\n")
    (root / "ucfTrainTestlist" / "testlist01.txt").write_text("")
    (root / "UCF-101" / "Archery").mkdir(parents=True)
    (root / "UCF-101" / "Archery" / "v_A_g01_c01.avi").symlink_to(tmp_path / "nowhere.avi")
    rows = by_id(ADAPTERS["ucf101"]("ucf", root, None, 1))
    assert rows["v_A_g01_c01"]["missing"].startswith("clip unreadable: dangling symbolic link")


def test_a_set_of_broken_links_only_is_an_error(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "x.mp4").symlink_to(tmp_path / "nowhere.mp4")
    with pytest.raises(UserError, match="holds no video files"):
        read_set("mine", str(tmp_path / "clips"))


def test_every_format_the_schema_accepts_has_an_adapter():
    from tvts.config import DOWNSTREAM_FORMATS

    assert set(ADAPTERS) == set(DOWNSTREAM_FORMATS)
