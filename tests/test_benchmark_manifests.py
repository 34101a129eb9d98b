"""Benchmark manifest builders against the real annotation files in ../shared/data/annotations.

Counts come from the datasets' papers and SOURCES.md; interval conventions are checked
against independent frame-level files wherever both exist (Ped2 .m vs .npy, Avenue mask
json vs the official .mat pixel masks).
"""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vadpipe.data_manifests.benchmarks import BUILDERS, build_benchmark_manifest
from vadpipe.data_manifests.schema import Manifest, check_video_id
from vadpipe.errors import VadpipeError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ANNOTATIONS = SHARED / "annotations"
VIDEOS = SHARED / "videos"
FOLDERS = {
    "ucf_crime": "ucf_crime",
    "shanghaitech": "shanghaitech",
    "xd_violence": "xd_violence",
    "avenue": "avenue",
    "ped2": "ucsd_ped2",
}
needs_sample_videos = pytest.mark.skipif(
    not VIDEOS.is_dir(), reason=f"sample benchmark videos not found at {VIDEOS}"
)
PED2_TEST_LENGTHS = (180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180)

pytestmark = pytest.mark.skipif(
    not ANNOTATIONS.is_dir(),
    reason=f"real benchmark annotation files not found at {ANNOTATIONS}",
)


def build(dataset: str, videos: Path | str = "/nonexistent/videos", **options) -> Manifest:
    return build_benchmark_manifest(dataset, ANNOTATIONS / FOLDERS[dataset], videos, **options)


def counts(manifest: Manifest) -> dict[tuple[str, str], int]:
    """``{(split, "normal" | "anomalous"): number of videos}``."""
    return dict(
        collections.Counter((e.split, "normal" if e.is_normal else "anomalous") for e in manifest)
    )


def concatenated_labels(entries, lengths=None) -> np.ndarray:
    lengths = lengths or [None] * len(entries)
    return np.concatenate([e.frame_labels(n) for e, n in zip(entries, lengths, strict=True)])


def raw_lines(*parts: str) -> list[str]:
    """Non-blank lines of an annotation file, stripped."""
    text = ANNOTATIONS.joinpath(*parts).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


ALL_VARIANTS = [
    ("ucf_crime", {}),
    ("ucf_crime", {"end": "inclusive"}),
    ("shanghaitech", {}),
    ("shanghaitech", {"split": "weak"}),
    ("shanghaitech", {"split": "weak", "cross_scene": "01,02:03,04"}),
    ("xd_violence", {}),
    ("avenue", {}),
    ("avenue", {"gt": "masks"}),
    ("ped2", {}),
]


# ---------------------------------------------------------------- UCF-Crime
def test_ucf_crime_split_labels_and_intervals():
    m = build("ucf_crime")
    assert counts(m) == {
        ("train", "normal"): 800,
        ("train", "anomalous"): 810,
        ("test", "normal"): 150,
        ("test", "anomalous"): 140,
    }
    assert len(m.anomaly_classes) == 13 and "RoadAccidents" in m.anomaly_classes
    # weak supervision: training videos carry a class, never frame intervals
    assert all(not e.intervals for e in m.select("train"))
    anomalous_test = m.select("test", normal=False)
    assert all(e.intervals for e in anomalous_test)
    assert sum(len(e.intervals) == 2 for e in anomalous_test) == 16
    assert all(e.num_frames is None for e in m)
    assert m.meta["protocol"] == ["micro_auc"] and m.meta["end"] == "exclusive"

    assert (
        m["Normal_Videos001_x264"].path
        == "/nonexistent/videos/Training_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4"
    )
    assert m["Normal_Videos_003_x264"].split == "test" and m["Normal_Videos_003_x264"].is_normal
    assert m["Arson011_x264"].label == "Arson"
    assert [(iv.start, iv.end) for iv in m["Arson011_x264"].intervals] == [(150, 420), (680, 1267)]


def test_ucf_crime_end_conventions():
    exclusive, inclusive = build("ucf_crime"), build("ucf_crime", end="inclusive")
    # Abuse028_x264: "165 240" -> VadCLIP gt[165:240]; RTFM range(165, 241), LAVAD 165 <= f <= 240
    assert exclusive["Abuse028_x264"].frame_labels(300).nonzero()[0][[0, -1]].tolist() == [165, 239]
    assert inclusive["Abuse028_x264"].frame_labels(300).nonzero()[0][[0, -1]].tolist() == [165, 240]
    for a, b in zip(exclusive.select("test"), inclusive.select("test"), strict=True):
        assert [(iv.start, iv.end + 1) for iv in a.intervals] == [
            (iv.start, iv.end) for iv in b.intervals
        ]
    assert (exclusive.meta["end_offset"], inclusive.meta["end_offset"]) == (0, 1)
    assert sum(iv.end - iv.start for e in inclusive for iv in e.intervals) - sum(
        iv.end - iv.start for e in exclusive for iv in e.intervals) == 156
    with pytest.raises(VadpipeError, match="end must be one of"):
        build("ucf_crime", end="closed")


# ---------------------------------------------------------------- ShanghaiTech
def test_shanghaitech_one_class_split():
    m = build("shanghaitech", videos="/data/sht")
    assert counts(m) == {("train", "normal"): 330, ("test", "anomalous"): 107}
    test = m.select("test")
    assert all(
        e.mask_path and e.mask_path.endswith(f"test_frame_mask/{e.video_id}.npy") for e in test
    )
    labels = concatenated_labels(test)
    assert labels.size == 40_791 and labels.sum() == 17_326
    assert sum(e.num_frames for e in test) == 40_791
    # the 107 masks in sorted order are MNAD's concatenated label file
    reference = np.load(
        ANNOTATIONS / "shanghaitech" / "frame_labels_shanghai.npy", allow_pickle=False
    )
    np.testing.assert_array_equal(labels, reference.reshape(-1))
    assert m["01_001"].path == "/data/sht/training/videos/01_001.avi"
    assert m["01_0014"].path == "/data/sht/testing/frames/01_0014"
    assert m["01_0014"].scene == "01" and m["12_0174"].scene == "12"
    assert m.meta["split"] == "one-class" and m.meta["protocol"] == ["micro_auc", "macro_auc"]


def test_shanghaitech_weak_split_of_zhong():
    m = build("shanghaitech", split="weak")
    assert counts(m) == {
        ("train", "normal"): 175,
        ("train", "anomalous"): 63,
        ("test", "normal"): 155,
        ("test", "anomalous"): 44,
    }
    assert m.ids("train") == raw_lines("shanghaitech", "SH_Train.txt")
    assert m.ids("test") == raw_lines("shanghaitech", "SH_Test.txt")
    # training videos get video-level labels only
    assert all(e.mask_path is None and not e.intervals for e in m.select("train"))
    assert all(len(e.video_id) == 7 for e in m.select(normal=False))
    test_labels = concatenated_labels(m.select("test", normal=False))
    assert test_labels.sum() > 0 and all(e.mask_path for e in m.select("test", normal=False))


def test_shanghaitech_anomaly_classes_of_the_semantic_annotation(tmp_path):
    """classes="semantic": AnomalyCLIP's 17 ShanghaiTech classes on the real masks. Every
    anomalous frame keeps its class (the union of the class intervals is the mask, frame for
    frame); a multi-class video's label is its class with the most frames."""
    from vadpipe.evaluate.frames import ground_truth

    plain = build("shanghaitech", split="weak")
    m = build("shanghaitech", split="weak", classes="semantic")
    # the authors' 17 ('step' only shares 10_0075, a training video labelled with its running, and is declared)
    assert m.anomaly_classes == ["car", "chasing", "circuit", "fall", "fighting", "hurdle", "jumping", "monocycle",
                                 "push", "robbery", "running", "skateboard", "step", "stoop", "throwing object",
                                 "vaudeville", "vehicle"]
    assert m.ids() == plain.ids() and m.meta["classes"] == "semantic"
    for e, p in zip(m, plain):
        assert e.is_normal == p.is_normal and e.num_frames == p.num_frames
        if e.split == "test" and not e.is_normal:
            mask = np.load(p.mask_path)
            np.testing.assert_array_equal(e.frame_labels(e.num_frames), mask)
            assert e.mask_path is None and {iv.label for iv in e.intervals} <= set(m.anomaly_classes)
        if e.split == "train":
            assert not e.intervals and e.mask_path is None  # weak supervision: a label only
    labels = {e.video_id: e.label for e in m}
    assert labels["05_0023"] == "jumping" and labels["04_0012"] == "circuit"  # most frames of several classes
    assert sum(labels[v] == "fall" for v in ("03_0032", "03_0033", "04_0004", "07_0006")) == 4
    truth = ground_truth(m["05_0023"], m["05_0023"].num_frames, classes=m.anomaly_classes).targets
    assert truth[:, m.anomaly_classes.index("push")].any() and truth[:, m.anomaly_classes.index("stoop")].any()

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"videos": {"01_0014": {"length": 265, "classes": {"vehicle": [[1, 3]]}}}}))
    with pytest.raises(VadpipeError, match=r"bad\.json: video '01_0014': the class intervals and the frame mask "
                                           r"disagree at frame"):
        build("shanghaitech", classes=bad)


def test_shanghaitech_cross_scene():
    m = build("shanghaitech", split="one-class", cross_scene="1,2:03,4")
    assert {e.scene for e in m.select("train")} == {"01", "02"}
    assert {e.scene for e in m.select("test")} == {"03", "04"}
    assert m.meta["cross_scene"] == {"train": ["01", "02"], "test": ["03", "04"]}
    with pytest.raises(VadpipeError, match="must differ"):
        build("shanghaitech", cross_scene="01,02:02,03")
    with pytest.raises(VadpipeError, match="TRAIN_SCENES:TEST_SCENES"):
        build("shanghaitech", cross_scene="01,02")
    with pytest.raises(VadpipeError, match="no test videos in scene"):
        build("shanghaitech", cross_scene="01:13")


# ---------------------------------------------------------------- XD-Violence
def _xd_raw_frames() -> dict[str, set[int]]:
    """Anomalous frames per video straight from annotations.txt (0-based, [s, e))."""
    out = {}
    for line in raw_lines("xd_violence", "annotations.txt"):
        name, *numbers = line.split()
        numbers = [int(x) for x in numbers]
        out[name.removesuffix(".mp4")] = {
            f for s, e in zip(numbers[::2], numbers[1::2], strict=True) for f in range(s, e)
        }
    return out


def test_xd_violence_split_and_ground_truth():
    m = build("xd_violence", videos="/data/xd")
    assert len(m.select("train")) == 3954
    assert counts(m)[("test", "anomalous")] == 500 and counts(m)[("test", "normal")] == 300
    assert m.anomaly_classes == [
        "Abuse",
        "CarAccident",
        "Explosion",
        "Fighting",
        "Riot",
        "Shooting",
    ]
    assert m.meta["protocol"] == ["ap"]
    for e in m:
        check_video_id(e.video_id, "test")
    # names listed with a trailing .mp4 in annotations.txt are matched (14 of them)
    e = m["v=U6MC8JJJZSY__#1_label_G-0-0"]
    assert e.label == "Explosion" and e.path == "/data/xd/v=U6MC8JJJZSY__#1_label_G-0-0.mp4"
    # the frames are exactly annotations.txt's; the classes come from the multiclass file
    raw = _xd_raw_frames()
    for e in m.select("test", normal=False):
        frames = {f for iv in e.intervals for f in range(iv.start, iv.end)}
        assert frames == raw[e.video_id], e.video_id
    e = m["Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6"]
    assert e.label == "Explosion"  # first code of the name
    classes = e.frame_classes(900)
    assert classes[157] == "Shooting" and classes[200] == "Explosion" and classes[250] == "Shooting"
    assert classes[359] == "CarAccident" and classes[360] == "normal"
    assert m["Bad.Boys.1995__#01-33-51_01-34-37_label_B2-0-0"].label == "Shooting"


def test_xd_violence_train_labels_from_names():
    m = build("xd_violence")
    train = m.select("train")
    assert all(e.is_normal == ("label_A" in e.video_id) for e in train)
    assert all(not e.intervals for e in train)


# ---------------------------------------------------------------- Avenue
def test_avenue_ground_truth_variants():
    masks, prediction = build("avenue", gt="masks"), build("avenue")
    assert prediction.meta["gt"] == "frame-prediction" and masks.meta["gt"] == "masks"
    assert counts(masks) == {("train", "normal"): 16, ("test", "anomalous"): 21}
    assert masks.ids("test") == [f"test_{i:02d}" for i in range(1, 22)]
    mask_labels = concatenated_labels(masks.select("test"))
    prediction_labels = concatenated_labels(prediction.select("test"))
    assert mask_labels.size == prediction_labels.size == 15_324
    assert mask_labels.sum() == 3_712 and prediction_labels.sum() == 3_867
    assert (mask_labels != prediction_labels).sum() == 441
    reference = np.load(ANNOTATIONS / "avenue" / "frame_labels_avenue.npy", allow_pickle=False)
    np.testing.assert_array_equal(prediction_labels, reference.reshape(-1))


@pytest.mark.parametrize("video", [8, 21])
def test_avenue_mask_json_matches_official_pixel_masks(video):
    scipy_io = pytest.importorskip("scipy.io")
    mat = ANNOTATIONS / "avenue" / "testing_label_mask" / f"{video}_label.mat"
    if not mat.is_file():
        pytest.skip(f"{mat} not present")
    vol = scipy_io.loadmat(mat)["volLabel"]  # 1 x N cell of 360 x 640 uint8 masks
    expected = np.array([np.asarray(vol[0, k]).any() for k in range(vol.shape[1])], dtype=np.uint8)
    entry = build("avenue", gt="masks")[f"test_{video:02d}"]
    np.testing.assert_array_equal(entry.frame_labels(), expected)


@needs_sample_videos
def test_avenue_paths_prefer_documented_layout():
    m = build("avenue", videos=VIDEOS / "avenue")
    root = (VIDEOS / "avenue").resolve()
    assert m["test_08"].path == str(root / "testing_videos" / "08.avi")
    assert m["train_12"].path == str(root / "training_videos" / "12.avi")
    assert m["test_08"].num_frames == 36 and m["train_12"].num_frames is None


# ---------------------------------------------------------------- UCSD Ped2
def test_ped2_ranges_equal_reference_labels():
    m = build("ped2")
    assert counts(m) == {("train", "normal"): 16, ("test", "anomalous"): 12}
    assert m.ids("test") == [f"Test{i:03d}" for i in range(1, 13)]
    test = m.select("test")
    assert all(len(e.intervals) == 1 for e in test)
    labels = concatenated_labels(test, list(PED2_TEST_LENGTHS))
    assert labels.size == 2_010 and labels.sum() == 1_648
    reference = np.load(ANNOTATIONS / "ucsd_ped2" / "frame_labels_ped2.npy", allow_pickle=False)
    np.testing.assert_array_equal(labels, reference.reshape(-1))
    assert m["Test001"].intervals[0].start == 60  # "[61:180]": 1-based 61 is file 060.jpg


@needs_sample_videos
def test_ped2_frame_counts_from_existing_folders():
    m = build("ped2", videos=VIDEOS / "ucsd_ped2")
    root = (VIDEOS / "ucsd_ped2").resolve()
    assert m["Test001"].path == str(root / "testing" / "frames" / "01")
    assert m["Test001"].num_frames == 180 and m["Train001"].num_frames == 120
    assert m["Test002"].num_frames is None  # folder absent
    assert m["Test001"].frame_labels().sum() == 120


def test_ped2_parses_several_ranges_without_executing(tmp_path):
    (tmp_path / "UCSDped2.m").write_text(
        "TestVideoFile = {};\n"
        "% a comment\n"
        "TestVideoFile{end+1}.gt_frame = [1:50, 70:120];\n"
        "TestVideoFile{end+1}.gt_frame = [5:5];\r\n"
    )
    m = build_benchmark_manifest("ped2", tmp_path, tmp_path / "videos")
    assert [str(iv) for iv in m["Test001"].intervals] == ["0-50", "69-120"]
    assert [str(iv) for iv in m["Test002"].intervals] == ["4-5"]
    (tmp_path / "UCSDped2.m").write_text("TestVideoFile{end+1}.gt_frame = [1:50; system('x')];\n")
    with pytest.raises(VadpipeError, match=r"UCSDped2\.m:1: bad frame range"):
        build_benchmark_manifest("ped2", tmp_path, tmp_path / "videos")


# ---------------------------------------------------------------- all builders
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize(("dataset", "options"), ALL_VARIANTS)
def test_round_trip_through_saved_manifest(tmp_path, dataset, options, suffix):
    m = build(dataset, **options)
    loaded = Manifest.load(m.save(tmp_path / f"m{suffix}"))
    assert loaded.entries == m.entries
    assert loaded.meta == m.meta
    assert m.meta["dataset"] == dataset and m.meta["protocol"]


@pytest.mark.parametrize(("dataset", "options"), ALL_VARIANTS)
def test_pandas_and_csv_read_every_builders_manifest_as_is(tmp_path, dataset, options):
    """A saved CSV manifest's first line is its header (the README's columns); the builder's
    meta lives beside it in <manifest>.meta.json, where table readers never see it."""
    import csv

    import pandas as pd

    from vadpipe.data_manifests.schema import COLUMNS

    m = build(dataset, **options)
    path = m.save(tmp_path / "m.csv")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(table.columns) == list(COLUMNS) and len(table) == len(m)
    assert table["video_id"].tolist() == m.ids() and table["split"].tolist() == [e.split for e in m]
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["anomaly_intervals"] for r in rows] == [";".join(map(str, e.intervals)) for e in m]
    assert json.loads((tmp_path / "m.csv.meta.json").read_text()) == m.meta
    lines = pd.read_json(m.save(tmp_path / "m.jsonl"), lines=True, dtype=False)
    assert lines["video_id"].tolist() == m.ids() and set(lines.columns) <= set(COLUMNS)


def _missing_file_cases():
    return [
        ("ucf_crime", "Anomaly_Train.txt"),
        ("ucf_crime", "Anomaly_Test.txt"),
        ("ucf_crime", "Temporal_Anomaly_Annotation.txt"),
        ("shanghaitech", "SH_Train.txt"),
        ("shanghaitech", "SH_Test.txt"),
        ("shanghaitech", "test_frame_mask"),
        ("xd_violence", "audio.list"),
        ("xd_violence", "audio_test.list"),
        ("xd_violence", "annotations.txt"),
        ("xd_violence", "annotations_multiclasses.txt"),
        ("avenue", "avenue_frame_labels_from_masks.json"),
        ("avenue", "frame_labels_avenue.npy"),
        ("ped2", "UCSDped2.m"),
    ]


@pytest.mark.parametrize(("dataset", "missing"), _missing_file_cases())
def test_missing_annotation_file_is_named(tmp_path, dataset, missing):
    folder = tmp_path / FOLDERS[dataset]
    shutil.copytree(ANNOTATIONS / FOLDERS[dataset], folder, ignore=shutil.ignore_patterns(missing))
    with pytest.raises(VadpipeError) as info:
        build_benchmark_manifest(dataset, folder, tmp_path / "videos")
    message = str(info.value)
    assert missing in message and "\n" not in message


def test_bad_line_is_reported_with_file_and_line(tmp_path):
    folder = tmp_path / "ucf_crime"
    shutil.copytree(ANNOTATIONS / "ucf_crime", folder)
    train = folder / "Anomaly_Train.txt"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([*lines[:3], lines[0], *lines[3:]]) + "\n")
    with pytest.raises(
        VadpipeError, match=r"Anomaly_Train\.txt:4: .* listed twice \(first on line 1\)"
    ):
        build_benchmark_manifest("ucf_crime", folder, tmp_path)
    train.write_text("\n".join(["Robberies/Robbery001_x264.mp4", *lines]) + "\n")
    with pytest.raises(
        VadpipeError, match=r"Anomaly_Train\.txt:1: unknown UCF-Crime class 'Robberies'"
    ):
        build_benchmark_manifest("ucf_crime", folder, tmp_path)


def test_unknown_dataset_and_option():
    with pytest.raises(VadpipeError) as info:
        build_benchmark_manifest("ucf101", ANNOTATIONS, "videos")
    assert all(name in str(info.value) for name in BUILDERS)
    with pytest.raises(VadpipeError, match=r"unknown option.*split.*accepted: gt"):
        build_benchmark_manifest("avenue", ANNOTATIONS / "avenue", "videos", split="weak")
    assert len(build_benchmark_manifest("UCSD-Ped2", ANNOTATIONS / "ucsd_ped2", "v")) == 28
    with pytest.raises(VadpipeError, match="annotation folder not found"):
        build_benchmark_manifest("avenue", ANNOTATIONS / "nope", "videos")
