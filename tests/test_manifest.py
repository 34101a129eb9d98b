import json

import numpy as np
import pytest

from vadpipe.data_manifests import Interval, Manifest, VideoEntry, build_folder_manifest, load_manifest, parse_intervals
from vadpipe.errors import VadpipeError

from conftest import require_shared

HEADER = "video_id,path,split,label,anomaly_intervals,mask_path,fps,num_frames,scene\n"


def write(tmp_path, text, name="m.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_round_trip_and_conventions(tmp_path):
    p = write(tmp_path, HEADER + "a,videos/a.mp4,train,normal,,,25,100,s1\n"
              "b,videos/b.mp4,test,Fighting,60-180;200-240:Shooting,,,300,\n")
    m = load_manifest(p)
    assert m.ids() == ["a", "b"]
    b = m["b"]
    assert b.path == str(tmp_path / "videos" / "b.mp4")  # relative to the manifest's folder
    assert b.intervals == (Interval(60, 180), Interval(200, 240, "Shooting"))
    labels = b.frame_labels()
    assert labels.sum() == 120 + 40 and labels[59] == 0 and labels[60] == 1 and labels[179] == 1 and labels[180] == 0
    assert list(b.frame_classes()[[60, 200]]) == ["Fighting", "Shooting"]
    assert m.anomaly_classes == ["Fighting", "Shooting"]
    m.save(tmp_path / "copy.jsonl")
    again = load_manifest(tmp_path / "copy.jsonl")
    assert again.entries == m.entries


@pytest.mark.parametrize(
    "row, message",
    [
        ("x/y,a.mp4,train,normal,,,,,", "m.csv:2: video_id 'x/y' is not safe"),
        ("..,a.mp4,train,normal,,,,,", "m.csv:2: video_id '..' is not safe"),
        ("a,a.mp4,validation,normal,,,,,", "m.csv:2: unknown split 'validation'"),
        ("a,a.mp4,test,Fight,60-x,,,,", "m.csv:2: bad anomaly interval '60-x'"),
        ("a,a.mp4,test,Fight,80-60,,,,", "m.csv:2: empty anomaly interval"),
        ("a,a.mp4,test,Fight,0-500,,,100,", "m.csv:2: interval 0-500 ends past num_frames=100"),
        ("a,a.mp4,test,normal,0-5,,,,", "labelled normal but has anomaly intervals"),
        ("a,,test,normal,,,,,", "m.csv:2: missing path"),
        ("a,a.mp4,test,normal,,,abc,,", "m.csv:2: fps must be a number"),
        ("a,a.mp4,test,normal,,,", "m.csv:2: 7 fields, header has 9"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    p = write(tmp_path, HEADER + row + "\n")
    with pytest.raises(VadpipeError) as err:
        load_manifest(p)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_duplicate_ids_and_jsonl_errors(tmp_path):
    p = write(tmp_path, HEADER + "a,a.mp4,train,normal,,,,,\na,b.mp4,test,normal,,,,,\n")
    with pytest.raises(VadpipeError, match=r"m.csv:3: duplicate video_id 'a' \(first on line 2\)"):
        load_manifest(p)
    p = write(tmp_path, '{"video_id": "a", "path": "a.mp4", "split": "train", "label": "normal"}\n{oops\n', "m.jsonl")
    with pytest.raises(VadpipeError, match=r"m.jsonl:2: not valid JSON"):
        load_manifest(p)
    with pytest.raises(VadpipeError, match="manifest not found"):
        load_manifest(tmp_path / "nope.csv")


def test_meta_is_written_beside_the_manifest(tmp_path):
    m = Manifest([VideoEntry("a", "a.mp4", "test", "normal")], meta={"dataset": "x", "protocol": ["ap"]})
    for name in ("m.csv", "m.jsonl"):
        path = m.save(tmp_path / name)
        assert path.read_text().splitlines()[0].startswith("video_id" if name == "m.csv" else '{"video_id"')
        assert json.loads((tmp_path / f"{name}.meta.json").read_text()) == m.meta
        assert load_manifest(path).meta == m.meta
        Manifest(m.entries).save(path)  # no meta now: the old file beside it must not come back
        assert not (tmp_path / f"{name}.meta.json").exists() and load_manifest(path).meta == {}
    (tmp_path / "m.csv.meta.json").write_text("[1, 2]")
    with pytest.raises(VadpipeError, match=r"m.csv.meta.json: manifest meta must be a JSON object"):
        load_manifest(tmp_path / "m.csv")


def test_metadata_comment_and_mask(tmp_path):
    """Manifests of vadpipe 0.2 carried their meta in a first '# {...}' comment line: still read."""
    np.save(tmp_path / "mask.npy", np.array([0, 0, 1, 1, 0], dtype=np.uint8))
    p = write(tmp_path, "# " + json.dumps({"dataset": "x", "gt": "masks"}) + "\n" + HEADER
              + "a,a.mp4,test,anomaly,,mask.npy,,,\n")
    m = load_manifest(p)
    assert m.meta == {"dataset": "x", "gt": "masks"}
    assert m["a"].frame_labels(5).tolist() == [0, 0, 1, 1, 0]
    with pytest.raises(VadpipeError, match="mask of video 'a' has 5 frames but the video has 6"):
        m["a"].frame_labels(6)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    p2 = write(tmp_path, HEADER + "a,a.mp4,test,anomaly,,obj.npy,,,\n", "m2.csv")
    with pytest.raises(VadpipeError, match="not a readable .npy mask"):
        load_manifest(p2)["a"].frame_labels()  # never unpickled


def test_frame_count_disagreement_is_an_error():
    m = Manifest([])
    from vadpipe.data_manifests import VideoEntry

    e = VideoEntry("v", "v.mp4", "test", "x", parse_intervals("0-10"), num_frames=100)
    with pytest.raises(VadpipeError, match="manifest says 100 frames but the decoded video has 90"):
        e.frame_labels(90)
    assert len(m) == 0


def test_folder_builder_on_real_footage(tmp_path):
    root = require_shared("videos")
    m = build_folder_manifest(root)
    ids = m.ids()
    assert "ucsd_ped2_testing_frames_01" in ids and "avenue_training_videos_12" in ids
    assert m["ucsd_ped2_training_frames_01"].split == "train"
    assert m["avenue_testing_videos_21"].split == "test"
    out = m.save(tmp_path / "folder.csv")
    assert load_manifest(out).entries == m.entries
