"""Hostile annotation files: each defect is one UserError naming the file, the line (or key)
and what was expected (the CLI's exit-2 message), or a quarantined row with its reason; never a
traceback, never a label lost without a word, never a clip in two splits."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from tvts.config import DownstreamSource, load_params
from tvts.downstream.formats import ADAPTERS
from tvts.downstream.manifests import read_set
from tvts.downstream.svo import read_svo_probes
from tvts.errors import UserError

LATIN1 = "caf\xe9".encode("latin-1")
K400_HEAD = "label,youtube_id,time_start,time_end,split,is_cc\n"
SSV2_LABELS = json.dumps({"Dropping something": "0"})


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def ssv2_train(entries: object) -> dict[str, str]:
    return {"labels.json": SSV2_LABELS, "train.json": json.dumps(entries)}


def ucf(class_ind: bytes, trainlist: bytes, testlist: bytes = b"") -> dict[str, bytes]:
    return {"ucfTrainTestlist/classInd.txt": class_ind,
            "ucfTrainTestlist/trainlist01.txt": trainlist,
            "ucfTrainTestlist/testlist01.txt": testlist}


def msrvtt(meta: object) -> dict[str, str]:
    return {"MSR_VTT.json": json.dumps(meta)}


# (format, files, what the message must say: the file, the line or key, what was expected)
HOSTILE = {
    "ssv2 latin-1": ("ssv2", {"labels.json": SSV2_LABELS,
                              "train.json": b'[{"id": "1", "template": "' + LATIN1 + b'"}]'},
                     r"train\.json, line 1: byte 0xe9 is not UTF-8"),
    "k400 latin-1": ("k400", {"kinetics_train.csv": K400_HEAD.encode() + b"x,\n"
                              + LATIN1 + b",a,1,11,train,0\n"},
                     r"kinetics_train\.csv, line 3: byte 0xe9 is not UTF-8"),
    "lsmdc latin-1": ("lsmdc", {"LSMDC16_annos_training.csv": b"a_1\t1\t2\t1\t2\t" + LATIN1},
                      r"LSMDC16_annos_training\.csv, line 1: byte 0xe9"),
    "msvd latin-1": ("msvd", {"raw-captions.pkl": pickle.dumps({"v": [["a"]]}),
                              "train_list.txt": b"v\n" + LATIN1 + b"\n"},
                     r"train_list\.txt, line 2: byte 0xe9"),
    "ssv2 no id": ("ssv2", ssv2_train([{"template": "Dropping [something]"}]),
                   r"train\.json, entry 0: missing key 'id'"),
    "ssv2 template int": ("ssv2", ssv2_train([{"id": "1", "template": 3}]),
                          r"train\.json, entry 0: 'template' is 3; expected a string"),
    "ssv2 train is an object": ("ssv2", {"labels.json": SSV2_LABELS, "train.json": "{}"},
                                r"train\.json: expected a list at the top level, found an obj"),
    "ssv2 labels is a list": ("ssv2", {"labels.json": "[]", "train.json": "[]"},
                              r"labels\.json: expected an object at the top level"),
    "msrvtt no sentences": ("msrvtt", msrvtt({"videos": []}),
                            r"MSR_VTT\.json, top level: missing key 'sentences'"),
    "msrvtt sentence without caption": (
        "msrvtt", msrvtt({"videos": [], "sentences": [{"video_id": "video0", "sentence": "x"}]}),
        r"MSR_VTT\.json, sentences\[0\]: missing key 'caption'"),
    "didemo no video": ("didemo", {"train_data.json": json.dumps([{"description": "x"}])},
                        r"train_data\.json, entry 0: missing key 'video'"),
    "didemo null description": (
        "didemo", {"train_data.json": json.dumps([{"video": "a.mp4", "description": None}])},
        r"train_data\.json, entry 0: 'description' is None; expected a string"),
    "hmdb51 one token": ("hmdb51", {"testTrainMulti_7030_splits/run_test_split1.txt":
                                    "a.avi 1\nb.avi\n"},
                         r"run_test_split1\.txt, line 2: 'b\.avi'; expected `<clip>\.avi <0\|1"),
    "ucf101 one-token class line": ("ucf101", ucf(b"1 Archery\r\n2\r\n", b""),
                                    r"classInd\.txt, line 2: '2'; expected `<index> <Class>`"),
    "ucf101 one-token train line": ("ucf101", ucf(b"1 Archery\n", b"Archery/v_a.avi\n"),
                                    r"trainlist01\.txt, line 1: .*expected `<Class>/<clip>\.avi "
                                    r"<index>`"),
    "ucf101 non-integer label": ("ucf101", ucf(b"1 Archery\n", b"Archery/v_a.avi one\n"),
                                 r"trainlist01\.txt, line 1: class index 'one' is not an integer"),
    "k400 non-numeric time": ("k400", {"kinetics_train.csv": K400_HEAD + "a,x,1,soon,train,0\n"},
                              r"kinetics_train\.csv, line 2: time_end 'soon' is not a number"),
    "k400 short row": ("k400", {"kinetics_train.csv": K400_HEAD + "a,x,1\n"},
                       r"kinetics_train\.csv, line 2: the row ends before column\(s\) "
                       r"\['time_end'\]"),
    # a string that claims 1 TiB: read from the file, the unpickler would allocate it first
    "msvd garbage pickle": ("msvd", {"raw-captions.pkl": b"\x80\x04\x8d" + (1 << 40).to_bytes(
                                     8, "little") + b"\x00", "train_list.txt": "v\n"},
                            r"raw-captions\.pkl: not a captions pickle"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_is_one_message_naming_file_and_line(tmp_path, case):
    fmt, files, message = HOSTILE[case]
    root = write(tmp_path / "set", files)
    with pytest.raises(UserError, match=message):
        ADAPTERS[fmt]("s", root)


def test_hostile_files_exit_2_through_the_cli(tmp_path, monkeypatch, capsys):
    """The stage's own entry point prints the message and exits 2 (no traceback)."""
    from tvts.cli import main

    root = write(tmp_path / "k", {"kinetics_train.csv": K400_HEAD + "a,x,1,soon,train,0\n"})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        "profile: micro\ndownstream:\n  sets:\n    k: {format: k400, root: " + str(root)
        + "}\n  svo: null\nevaluate:\n  tasks: {k: [linear]}\n")
    assert main(["stage", "downstream"]) == 2
    err = capsys.readouterr().err
    assert "time_end 'soon' is not a number" in err and "Traceback" not in err


def test_truncated_svo_csv_names_its_line(tmp_path):
    head = ("sentence,pos_triplet,neg_triplet,subj_neg,verb_neg,obj_neg,pos_image_id,"
            "neg_image_id\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "svo_probes.csv").write_text(head + "a man rides,man ride horse,man")
    with pytest.raises(UserError, match=r"svo_probes\.csv, line 2: the row ends before"):
        read_svo_probes(tmp_path)


def test_svo_image_ids_cannot_leave_the_images_folder(tmp_path):
    head = ("sentence,pos_triplet,neg_triplet,subj_neg,verb_neg,obj_neg,pos_image_id,"
            "neg_image_id\n")
    images = tmp_path / "svo" / "images"
    images.mkdir(parents=True)
    for name in ("ok.jpg", "neg.jpg"):
        (images / name).write_bytes(b"\0")
    (tmp_path / "secret.jpg").write_bytes(b"\0")
    (tmp_path / "svo" / "svo_probes.csv").write_text(
        head + "s,a b c,a b d,False,False,True,ok,neg\n"
        f"s,a b c,a b d,False,False,True,../../secret,neg\n"
        f"s,a b c,a b d,False,False,True,{tmp_path / 'secret'},neg\n")
    probes, bad = read_svo_probes(tmp_path / "svo")
    assert len(probes) == 1 and len(bad) == 2
    assert all("not a plain file name" in b["reason"] for b in bad)


def test_k400_bom_keeps_every_label(tmp_path):
    root = write(tmp_path / "k", {"kinetics_train.csv": "\ufeff" + K400_HEAD
                                  + "abseiling,x,1,11,train,0\n"})
    (rows,) = ADAPTERS["k400"]("k", root)
    assert rows["label"] == "abseiling"


def test_k400_empty_label_is_quarantined_with_its_line(tmp_path):
    root = write(tmp_path / "k", {"kinetics_train.csv": K400_HEAD + ",x,1,11,train,0\n"})
    root.joinpath("videos").mkdir()
    root.joinpath("videos", "x_000001_000011.mp4").write_bytes(b"\0")
    (rows,) = ADAPTERS["k400"]("k", root)
    assert rows["missing"] == f"empty label in {root / 'kinetics_train.csv'}, line 2"


def test_k400_train_file_without_a_label_column_is_an_error(tmp_path):
    root = write(tmp_path / "k", {"kinetics_train.csv": "youtube_id,time_start,time_end\n"})
    with pytest.raises(UserError, match=r"lacks the column\(s\) \['label'\]"):
        ADAPTERS["k400"]("k", root)


@pytest.mark.parametrize("layout", [
    ("kinetics_train.csv", "kinetics_val.csv", "kinetics_test.csv"),  # 2017 tarballs, mmaction
    ("kinetics_train/kinetics_train.csv", "kinetics_val/kinetics_val.csv",
     "kinetics_test/kinetics_test.csv"),  # 2017 tarballs unpacked whole
    ("kinetics400/train.csv", "kinetics400/validate.csv", "kinetics400/test.csv"),  # DeepMind
    ("k400/annotations/train.csv", "k400/annotations/val.csv", "k400/annotations/test.csv"),
    ("kinetics-400_train.csv", "kinetics-400_val.csv", "kinetics-400_test.csv"),  # ActivityNet
])
def test_k400_release_file_names(tmp_path, layout):
    train, val, test = layout
    root = write(tmp_path / "k", {train: K400_HEAD + "a,x,1,11,train,0\n",
                                  val: K400_HEAD + "a,y,1,11,val,0\n",
                                  test: "youtube_id,time_start,time_end,split\nz,1,11,test\n"})
    rows = ADAPTERS["k400"]("k", root)
    assert sorted((r["split"], r["downstream_id"]) for r in rows) == [
        ("test", "z_000001_000011"), ("train", "x_000001_000011"), ("val", "y_000001_000011")]


def test_msrvtt_clip4clip_layout(tmp_path):
    videos = [{"video_id": f"video{i}", "split": "train"} for i in range(3)]
    sentences = [{"video_id": f"video{i}", "caption": f"c{i}"} for i in range(3)]
    root = write(tmp_path / "m", {
        "msrvtt_data/MSRVTT_data.json": json.dumps({"videos": videos, "sentences": sentences}),
        "msrvtt_data/MSRVTT_JSFUSION_test.csv": "key,vid_key,video_id,sentence\n"
                                                "ret0,msr2,video2,a test sentence\n",
        "msrvtt_data/MSRVTT_train.9k.csv": "video_id\nvideo0\n"})
    rows = {r["downstream_id"]: r for r in ADAPTERS["msrvtt"]("m", root)}
    assert rows["video2"]["split"] == "test" and rows["video2"]["captions"] == ["a test sentence"]
    assert rows["video0"]["split"] == "train" and "video1" not in rows


def test_ucf101_class_index_not_in_classind_is_quarantined(tmp_path):
    root = write(tmp_path / "u", ucf(b"1 Archery\n", b"Archery/v_a.avi 7\n",
                                     b"Bowling/v_b.avi\n"))
    for name in ("Archery/v_a.avi", "Bowling/v_b.avi"):
        write(root / "UCF-101", {name: b"\0"})
    rows = {r["downstream_id"]: r for r in ADAPTERS["ucf101"]("u", root)}
    assert rows["v_a"]["missing"] == "class index 7 is not in classInd.txt"
    assert rows["v_b"]["missing"] == "folder 'Bowling' is not a class of classInd.txt"


def _release(root: Path, train: str, val: str) -> DownstreamSource:
    write(root, {"kinetics_train.csv": K400_HEAD + train, "kinetics_val.csv": K400_HEAD + val})
    for stem in ("x_000001_000011", "y_000001_000011"):
        write(root / "videos", {f"{stem}.mp4": b"\0"})
    return DownstreamSource(format="k400", root=str(root))


def test_a_clip_in_train_and_validation_is_an_error_naming_both_lines(tmp_path):
    source = _release(tmp_path / "k", "a,x,1,11,train,0\na,y,1,11,train,0\n",
                      "a,y,1,11,val,0\n")
    with pytest.raises(UserError, match=r"kinetics_train\.csv, line 3 \(train.*kinetics_val\.csv"
                                        r", line 2 \(val.*leaks test items into training"):
        read_set("k", source)


def test_a_duplicate_id_in_one_split_is_an_error(tmp_path):
    source = _release(tmp_path / "k", "a,x,1,11,train,0\na,x,1.0,11,train,0\n", "")
    with pytest.raises(UserError, match=r"listed twice.*line 2.*line 3"):
        read_set("k", source)


def test_a_path_id_does_not_resolve_to_another_clip_by_its_stem(tmp_path):
    root = write(tmp_path / "s", ssv2_train([
        {"id": "100000", "template": "Dropping [something]"},
        {"id": "../100000", "template": "Dropping [something]"}]))
    write(root / "videos", {"100000.webm": b"\0"})
    rows = {r["downstream_id"]: r for r in read_set("s", DownstreamSource(format="ssv2",
                                                                            root=str(root)))}
    assert rows["100000"]["missing"] is None
    assert "not a plain file name" in rows["../100000"]["missing"]


@pytest.mark.parametrize(("source", "svo"), [("demo", "demo"), ("/data/my_videos", None)])
def test_svo_default_follows_the_corpus_source(tmp_path, source, svo):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"corpus:\n  source: {source}\n")
    assert load_params(params_file).svo_source() == svo
