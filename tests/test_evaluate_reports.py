"""Recognition metrics, benchmark protocols, report files / PNGs and run comparison."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score
from typer.testing import CliRunner

from vadpipe.cli import app
from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.evaluate import (
    EvalConfig,
    compare_reports,
    evaluate,
    expand,
    format_table,
    frame_class_targets,
    recognition_metrics,
    smooth,
)
from vadpipe.evaluate.recognition import match_classes
from vadpipe.scores import Scores, write_scores

runner = CliRunner()
STRIDE = 4
XD_META = {"builder": "benchmark", "dataset": "xd_violence", "split": "official", "protocol": ["ap"]}
# 4 test videos: two single-class, one with overlapping Fighting + Riot intervals
# (as XD-Violence has), one normal; a train video that must be ignored.
VIDEOS = [
    VideoEntry("fight_1", "fight_1.mp4", "test", "Fighting", (Interval(16, 40),), num_frames=64),
    VideoEntry("riot_1", "riot_1.mp4", "test", "Riot", (Interval(8, 28),), num_frames=48),
    VideoEntry("mixed#01=a.b", "mixed.mp4", "test", "Fighting",
               (Interval(20, 44, "Fighting"), Interval(32, 56, "Riot")), num_frames=72),
    VideoEntry("normal_1", "normal_1.mp4", "test", "normal", num_frames=40),
    VideoEntry("train_1", "train_1.mp4", "train", "Shooting"),
]
STORE_CLASSES = ("normal", "riot", "Fighting", "SHOOTING")  # other order, other case, extra column


def planted_scores(seed: int, strength: float) -> dict[str, Scores]:
    """Scores sampled every STRIDE frames: anomaly score and class columns lifted on GT frames."""
    rng = np.random.default_rng(seed)
    manifest = Manifest(VIDEOS)
    out = {}
    for e in manifest.select(split="test"):
        idx = np.arange(0, e.num_frames, STRIDE)
        hot = frame_class_targets(e, e.num_frames, ["Fighting", "Riot", "Shooting"])[idx]  # (T 3)
        score = strength * hot.any(axis=1) + rng.random(len(idx))
        probs = rng.random((len(idx), 4)) * 0.5
        probs[:, 2] += strength * hot[:, 0]
        probs[:, 1] += strength * hot[:, 1]
        out[e.video_id] = Scores(idx, score.astype(np.float32), e.num_frames, probs.astype(np.float32), STORE_CLASSES)
    return out


@pytest.fixture
def run_a(tmp_path):
    return write_scores(tmp_path / "a.zarr", planted_scores(0, 1.0), {"head": {"head": "zeroshot"}, "encoder": "k"})


# ------------------------------------------------------------------ recognition metrics
def test_recognition_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    targets = rng.random((500, 4)) < [0.1, 0.2, 0.05, 0.0]  # class 3 has no positives
    targets[:10, :2] = True  # some multi-label frames
    probs = rng.random((500, 4)) + targets
    m = recognition_metrics(targets, probs, ["a", "b", "c", "d"])
    for c in range(3):
        assert m.classes[c].auc == roc_auc_score(targets[:, c], probs[:, c])
        assert m.classes[c].ap == average_precision_score(targets[:, c], probs[:, c])
        assert m.classes[c].num_positive_frames == targets[:, c].sum()
    assert math.isnan(m.classes[3].auc) and math.isnan(m.classes[3].ap)
    assert m.mauc == np.mean([roc_auc_score(targets[:, c], probs[:, c]) for c in range(3)])
    assert m.map == np.mean([average_precision_score(targets[:, c], probs[:, c]) for c in range(3)])
    assert m.multi_label_frames == (targets.sum(1) > 1).sum() >= 10
    assert m.as_dict()["classes_without_positives"] == ["d"]


def test_recognition_by_hand():
    # class a: positives score 0.9, 0.2; negatives 0.1, 0.5, 0.3 -> 4 of 6 pairs ordered
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 0], [0, 0]], bool)
    probs = np.array([[0.9, 0.0], [0.2, 0.0], [0.1, 0.8], [0.5, 0.1], [0.3, 0.2]])
    m = recognition_metrics(targets, probs, ["a", "b"])
    assert m.classes[0].auc == pytest.approx(4 / 6) and m.classes[1].auc == 1.0
    assert m.classes[0].ap == pytest.approx((1 + 2 / 4) / 2) and m.classes[1].ap == 1.0
    assert m.mauc == pytest.approx((4 / 6 + 1) / 2)


def test_frame_class_targets_multi_hot_for_overlaps():
    mixed = Manifest(VIDEOS)["mixed#01=a.b"]
    hot = frame_class_targets(mixed, 72, ["Fighting", "Riot"])
    np.testing.assert_array_equal(np.flatnonzero(hot[:, 0]), np.arange(20, 44))
    np.testing.assert_array_equal(np.flatnonzero(hot[:, 1]), np.arange(32, 56))
    assert hot[32:44].all()  # overlapping frames are positive for both
    # frame_classes keeps one class there; without overlaps both agree
    assert set(mixed.frame_classes(72)[32:44]) == {"Riot"}
    fight = Manifest(VIDEOS)["fight_1"]
    one_hot = fight.frame_classes(64)[:, None] == np.array(["Fighting", "Riot"])[None]
    np.testing.assert_array_equal(frame_class_targets(fight, 64, ["Fighting", "Riot"]), one_hot)
    assert not frame_class_targets(Manifest(VIDEOS)["normal_1"], 40, ["Fighting"]).any()
    with pytest.raises(VadpipeError, match="manifest says 64 frames but the decoded video has 60"):
        frame_class_targets(fight, 60, ["Fighting"])


def test_class_names_matched_by_name():
    assert match_classes(["CarAccident", "Riot"], ("riot", "Car accident", "normal"), "s") == [1, 0]
    with pytest.raises(VadpipeError, match=r"no class probabilities for manifest class\(es\) Abuse, Riot"):
        match_classes(["Abuse", "Riot"], ("Fighting",), "s")
    with pytest.raises(VadpipeError, match="same name"):
        match_classes(["Riot"], ("Riot", "riot"), "s")


def test_evaluate_recognition_equals_sklearn_on_expanded_arrays(tmp_path, run_a):
    m = Manifest(VIDEOS)
    config = EvalConfig(expansion="linear", sigma=1.5, plots=False)
    report = evaluate(run_a, m, tmp_path / "rep", config)
    classes = m.anomaly_classes
    assert classes == ["Fighting", "Riot", "Shooting"]
    scores = planted_scores(0, 1.0)
    targets, probs = [], []
    for e in m.select(split="test"):
        s = scores[e.video_id]
        probs.append(smooth(expand(s.frame_index, s.class_probs[:, [2, 1, 3]], e.num_frames, "linear"), 1.5))
        targets.append(frame_class_targets(e, e.num_frames, classes))
    targets, probs = np.concatenate(targets), np.concatenate(probs)
    rows = {c["class"]: c for c in report["recognition"]["classes"]}
    for i, c in enumerate(classes[:2]):
        assert rows[c]["auc"] == roc_auc_score(targets[:, i], probs[:, i])
        assert rows[c]["ap"] == average_precision_score(targets[:, i], probs[:, i])
        assert rows[c]["num_positive_frames"] == targets[:, i].sum()
    assert rows["Shooting"]["num_positive_frames"] == 0 and math.isnan(rows["Shooting"]["auc"])  # train-only class
    assert report["mauc"] == np.mean([rows[c]["auc"] for c in classes[:2]]) > 0.9  # planted
    assert report["map"] == np.mean([rows[c]["ap"] for c in classes[:2]])
    assert report["recognition"]["multi_label_frames"] == 12
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["recognition"]["classes"][2] == {"class": "Shooting", "auc": None, "ap": None, "num_positive_frames": 0,
                                                  "subset_auc": None}


def test_missing_class_probabilities_are_errors(tmp_path):
    m = Manifest(VIDEOS)
    scores = planted_scores(0, 1.0)
    narrow = {k: Scores(s.frame_index, s.score, s.num_frames, s.class_probs[:, :2], ("normal", "Riot"))
              for k, s in scores.items()}
    with pytest.raises(VadpipeError, match=r"manifest class\(es\) Fighting, Shooting"):
        evaluate(write_scores(tmp_path / "n.zarr", narrow, {}), m)
    no_probs = {k: Scores(s.frame_index, s.score, s.num_frames) for k, s in scores.items()}
    report = evaluate(write_scores(tmp_path / "p.zarr", no_probs, {}), m, tmp_path / "rep", EvalConfig(plots=False))
    assert report["recognition"] is None and report["mauc"] is None
    assert "recognition metrics (mAUC, mAP) not computed" in (tmp_path / "rep" / "report.md").read_text()


# ------------------------------------------------------------------ protocols
def test_headline_follows_the_manifest_protocol(tmp_path, run_a):
    report = evaluate(run_a, Manifest(VIDEOS, meta=XD_META))
    assert report["protocol"]["headline"] == ["ap"] and report["headline"] == {"ap": report["ap"]}
    assert report["protocol"]["variant"] == {"dataset": "xd_violence", "split": "official"}
    table = format_table(report).splitlines()
    assert table[0].startswith("protocol: dataset=xd_violence, split=official; test split; headline: AP (manifest)")
    assert table[1].startswith("| head | encoder | AP | micro AUC | macro AUC | mAUC | mAP |")
    assert table[-1].startswith("| zeroshot | k |")
    plain = evaluate(run_a, Manifest(VIDEOS))
    assert plain["protocol"]["headline"] == ["micro_auc"] and plain["protocol"]["headline_source"] == "default"
    assert "headline: micro AUC (default)" in format_table(plain)
    sht = {"dataset": "shanghaitech", "split": "weak", "cross_scene": None, "protocol": ["micro_auc", "macro_auc"]}
    line = format_table(evaluate(run_a, Manifest(VIDEOS, meta=sht))).splitlines()[0]
    assert "dataset=shanghaitech, split=weak, cross_scene=none" in line and "headline: micro AUC, macro AUC" in line
    with pytest.raises(VadpipeError, match="unknown metric"):
        evaluate(run_a, Manifest(VIDEOS, meta={"protocol": ["auc_pr"]}))


# ------------------------------------------------------------------ report files
def test_report_files_tables_and_pngs(tmp_path, run_a):
    out = tmp_path / "rep"
    report = evaluate(run_a, Manifest(VIDEOS, meta=XD_META), out, EvalConfig(max_timelines=2))
    md = (out / "report.md").read_text()
    assert md.index("**AP** (headline)") < md.index("| micro AUC |")
    for needle in ("## Protocol", "`repeat`", "0-based, half-open [start, end)", "dataset=xd_violence",
                   "## Recognition per class", "| class | AUC | AP | positive frames |", "| Shooting | n/a | n/a | 0 |",
                   "(mAUC)", "12 frames carry more than one class", "## Per-video AUC",
                   "| normal_1 | normal | 40 | 0 | n/a |", "Score timelines: 2 of 4 videos (capped"):
        assert needle in md, needle
    assert "(timelines/mixed%2301%3Da.b.png)" not in md  # capped: only the first two
    assert "(timelines/fight_1.png)" in md
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == ["pr.png", "roc.png", "timelines/fight_1.png", "timelines/riot_1.png"]
    for f in files:
        with Image.open(out / f) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] >= 400
    assert report["figures"]["timelines_total"] == 4
    saved = json.loads((out / "report.json").read_text())
    assert [v["video_id"] for v in saved["videos"]] == ["fight_1", "riot_1", "mixed#01=a.b", "normal_1"]


def test_timeline_link_of_odd_video_id_is_quoted(tmp_path, run_a):
    evaluate(run_a, Manifest(VIDEOS), tmp_path / "rep", EvalConfig())
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "[mixed#01=a.b](timelines/mixed%2301%3Da.b.png)" in md and "Score timelines: all 4 videos." in md
    assert (tmp_path / "rep" / "timelines" / "mixed#01=a.b.png").is_file()


# ------------------------------------------------------------------ compare
def _report(tmp_path, name, meta, seed=0, strength=1.0, sigma=0.0, videos=VIDEOS):
    scores = write_scores(tmp_path / f"{name}.zarr", planted_scores(seed, strength), {"head": {"head": name}})
    evaluate(scores, Manifest(list(videos), meta=meta), tmp_path / name, EvalConfig(sigma=sigma, plots=False))
    return tmp_path / name


def test_compare_puts_runs_side_by_side(tmp_path):
    a = _report(tmp_path, "strong", XD_META)
    b = _report(tmp_path, "weak", XD_META, seed=1, strength=0.2, sigma=2.0)
    comparison = compare_reports([a, b], tmp_path / "cmp")
    assert [r["name"] for r in comparison["runs"]] == ["strong", "weak"]
    assert comparison["metrics"][0] == "ap"
    ap = {r["name"]: r["ap"] for r in comparison["runs"]}
    assert ap["strong"] == json.loads((a / "report.json").read_text())["ap"] > ap["weak"]
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| run | head | encoder | expansion | sigma | AP | micro AUC |" in md
    assert f"| strong | strong | None | repeat | 0.0 | **{ap['strong']:.4f}** |" in md
    assert "## Recognition per class (AUC / AP)" in md and "| Riot |" in md
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["protocol"]["headline"] == ["ap"]


@pytest.mark.parametrize("meta_b, message", [
    ({**XD_META, "split": "weak"}, r"different split \(split=official vs weak\)"),
    ({**XD_META, "gt": "masks"}, r"different ground truth \(gt=not recorded vs masks\)"),
    ({**XD_META, "dataset": "ucf_crime", "protocol": ["micro_auc"]}, "different dataset"),
])
def test_compare_refuses_other_protocols(tmp_path, meta_b, message):
    a = _report(tmp_path, "a", XD_META)
    b = _report(tmp_path, "b", meta_b)
    with pytest.raises(VadpipeError, match="cannot compare a and b: " + message):
        compare_reports([a, b])


def test_compare_refuses_other_ground_truth(tmp_path):
    a = _report(tmp_path, "a", {})
    shifted = [VideoEntry("fight_1", "f", "test", "Fighting", (Interval(12, 40),), num_frames=64), *VIDEOS[1:]]
    b = _report(tmp_path, "b", {}, videos=shifted)
    with pytest.raises(VadpipeError, match=r"ground truth \(num_anomalous_frames 80 vs 84\)"):
        compare_reports([a, b])
    with pytest.raises(VadpipeError, match="scores store, not a report folder"):
        compare_reports([a, tmp_path / "b.zarr"])
    with pytest.raises(VadpipeError, match="report not found"):
        compare_reports([a, tmp_path / "nothing"])


# ------------------------------------------------------------------ CLI
def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_evaluate_and_compare(tmp_path, run_a):
    manifest = Manifest(VIDEOS, meta=XD_META).save(tmp_path / "m.csv")
    r = invoke("evaluate", run_a, "--manifest", manifest, "-o", tmp_path / "rep_a", "--max-timelines", 1)
    assert r.exit_code == 0, r.output
    assert "protocol: dataset=xd_violence, split=official; test split; headline: AP (manifest)" in r.output
    assert "| zeroshot | k | " in r.output and "(1 of 4 timelines)" in r.output
    assert (tmp_path / "rep_a" / "timelines" / "fight_1.png").is_file()
    b = write_scores(tmp_path / "b.zarr", planted_scores(3, 0.5), {"head": {"head": "prototype"}})
    r = invoke("evaluate", b, "--manifest", manifest, "-o", tmp_path / "rep_b", "--no-plots")
    assert r.exit_code == 0, r.output
    assert not list((tmp_path / "rep_b").glob("*.png"))
    r = invoke("evaluate", "--compare", tmp_path / "rep_a", tmp_path / "rep_b", "-o", tmp_path / "cmp")
    assert r.exit_code == 0, r.output
    assert "| rep_a | zeroshot |" in r.output and "| rep_b | prototype |" in r.output
    assert (tmp_path / "cmp" / "report.md").is_file()


@pytest.mark.parametrize("args, message", [
    (["--compare", "x"], "--compare needs at least two report folders"),
    (["--compare", "x", "y", "--manifest", "m.csv"], "--manifest is not used"),
    ([], "evaluate needs one SCORES store and --manifest"),
    (["s.zarr"], "evaluate needs one SCORES store and --manifest"),
])
def test_cli_evaluate_usage_errors(tmp_path, args, message):
    r = invoke("evaluate", *args, "-o", tmp_path / "out")
    assert r.exit_code == 2 and message in r.output


def test_evaluate_never_imports_torch(tmp_path, run_a):
    import subprocess
    import sys

    Manifest(VIDEOS, meta=XD_META).save(tmp_path / "m.csv")
    code = (
        "import sys\n"
        "from vadpipe.data_manifests import load_manifest\n"
        "from vadpipe.evaluate import EvalConfig, compare_reports, evaluate\n"
        f"m = load_manifest({str(tmp_path / 'm.csv')!r})\n"
        f"evaluate({str(run_a)!r}, m, {str(tmp_path / 'r1')!r}, EvalConfig(max_timelines=1))\n"
        f"evaluate({str(run_a)!r}, m, {str(tmp_path / 'r2')!r}, EvalConfig(plots=False))\n"
        f"compare_reports([{str(tmp_path / 'r1')!r}, {str(tmp_path / 'r2')!r}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
