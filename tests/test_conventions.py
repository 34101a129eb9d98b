"""``vadpipe evaluate --convention NAME`` against each peer's own few lines, restated here.

For every convention, on the real annotation files of ../shared/data/annotations and seeded
synthetic scores (random, structured, with ties): the peer's ground truth and metric, written
in this file from its published code (commits and lines in docs/evaluation.md) -- not by
calling vadpipe -- equal what ``vadpipe.evaluate.evaluate`` reports, to 1e-9. ShanghaiTech is
checked frame for frame against RTFM's real ``gt-sh.npy``; Avenue and Ped2 against MNAD's
label arrays; UCF-Crime and XD-Violence against the interval files with synthetic lengths.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.data_manifests.benchmarks import build_benchmark_manifest
from vadpipe.errors import VadpipeError
from vadpipe.evaluate import EvalConfig, evaluate
from vadpipe.evaluate.run import collect_results
from vadpipe.scores import Scores, ScoresStore, write_scores

from conftest import ANNOTATIONS, require_shared

KINDS = ("random", "structured", "ties")
TOL = 1e-9


# ---------------------------------------------------------------- the peers, restated
def rtfm_metrics(gt, pred):
    """RTFM test_10crop.py:27-36: np.repeat(pred, 16); roc_curve + auc; PR area by the trapezoid."""
    pred = np.repeat(np.array(pred), 16)
    fpr, tpr, _ = roc_curve(list(gt), pred)
    precision, recall, _ = precision_recall_curve(list(gt), pred)
    return auc(fpr, tpr), auc(recall, precision)


def rtfm_ucf_gt(n_snippets, intervals):
    """RTFM list/make_gt_ucf.py:25-90: 16 * snippets frames, range(s, e + 1), or range(s, e) when e + 1 > N."""
    num_frame = n_snippets * 16
    gt = np.zeros(num_frame)
    for s, e in intervals:
        if not (e + 1) > num_frame:
            gt[s : e + 1] = 1.0
        else:
            gt[s:e] = 1.0
    return gt


def vadclip_gt(n_snippets, intervals):
    """VadCLIP list/make_gt_{ucf,xd}.py: (T + 1) * 16 zeros, gt[s:e] = 1, the last 16 dropped."""
    gt_vec = np.zeros((n_snippets + 1) * 16, dtype=np.float32)
    for s, e in intervals:
        gt_vec[s:e] = 1.0
    return gt_vec[:-16]


def xdviodet_gt(n, intervals):
    """XDVioDet list/make_gt.py:29-45: n frames, gt[s:e] = 1, drop the last frame, then (n - 1) % 16 more."""
    gt_vec = np.zeros(n, dtype=np.float32)
    for s, e in intervals:
        gt_vec[s:e] = 1.0
    mod = (n - 1) % 16
    gt_vec = gt_vec[:-1]
    if mod:
        gt_vec = gt_vec[:-mod]
    return gt_vec


def inclusive_gt(n, intervals):
    """LAVAD src/eval.py:35-44, AnomalyCLIP feature_dataset.py:340-345: s <= f <= e, every frame."""
    f = np.arange(n)
    labels = np.zeros(n)
    for s, e in intervals:
        labels[(s <= f) & (f <= e)] = 1
    return labels


def trapezoid_metrics(gt, pred):
    """LAVAD eval.py:175-181 / XDVioDet test.py:31-32: auc(roc_curve), auc(recall, precision)."""
    fpr, tpr, _ = roc_curve(gt, pred)
    precision, recall, _ = precision_recall_curve(gt, pred)
    return auc(fpr, tpr), auc(recall, precision)


def sklearn_metrics(gt, pred):
    """VadCLIP ucf_test.py:70-71 (and AnomalyCLIP's torchmetrics AUROC / AveragePrecision)."""
    return roc_auc_score(gt, pred), average_precision_score(gt, pred)


# ---------------------------------------------------------------- synthetic scores
def snippet_scores(kind, n, labels, rng):
    """One score per 16-frame snippet (ceil(n / 16) of them) of a video whose frames are ``labels``."""
    T = math.ceil(n / 16)
    if kind == "random":
        return rng.random(T)
    per = np.array([labels[16 * i : 16 * (i + 1)].mean() if 16 * i < len(labels) else 0.0 for i in range(T)])
    p = np.clip(0.6 * per + 0.5 * rng.random(T), 0, 1)
    return np.round(p, 1) if kind == "ties" else p


def scores_of(scores: dict[str, tuple[np.ndarray, int]], step=16) -> dict[str, Scores]:
    """video -> (one score per ``step`` frames, decoded length) as the Scores evaluate takes."""
    return {vid: Scores(np.arange(len(p)) * step, np.asarray(p, np.float64), n) for vid, (p, n) in scores.items()}


def store_of(tmp_path, name, scores: dict[str, tuple[np.ndarray, int]], step=16):
    """The same written as a scores store (what ``vadpipe score`` writes)."""
    return write_scores(tmp_path / f"{name}.zarr", scores_of(scores, step), {"encoder": "synthetic"})


def report_of(store, manifest, convention):
    return evaluate(store, manifest, None, EvalConfig(convention=convention, plots=False))


# ---------------------------------------------------------------- ShanghaiTech vs RTFM's gt-sh.npy
@pytest.mark.parametrize("kind", KINDS)
def test_shanghaitech_rtfm_against_its_real_gt_sh(tmp_path, kind):
    folder = require_shared("annotations", "shanghaitech")
    manifest = build_benchmark_manifest("shanghaitech", folder, "/nonexistent", split="weak")
    gt = np.load(folder / "gt-sh.npy")  # RTFM list/gt-sh.npy: 199 videos in its test-list order
    order = [line.rsplit("/", 1)[1][: -len("_i3d.npy")] for line in (folder / "shanghai-i3d-test-10crop.list").read_text().split()]
    rng = np.random.default_rng(["random", "structured", "ties"].index(kind))
    masks = {e.video_id: np.load(e.mask_path) for e in manifest.select("test") if e.mask_path}
    # the 44 masked videos come first (make_gt_sh.py: index > 43 is normal), each 16 * ceil(n / 16)
    # frames; the rest of gt-sh.npy is all zero: the 155 normal videos, whose lengths are unknown,
    # get lengths with the same number of snippets in all
    anomalous_frames = sum(16 * math.ceil(len(masks[v]) / 16) for v in order[:44])
    assert set(order[:44]) == set(masks) and not gt[anomalous_frames:].any()
    normal_snippets = (len(gt) - anomalous_frames) // 16
    per = np.full(155, normal_snippets // 155) + (np.arange(155) < normal_snippets % 155)
    lengths = {v: len(masks[v]) for v in order[:44]}
    lengths.update({v: int(16 * t - rng.integers(0, 16)) for v, t in zip(order[44:], per)})
    scores, pred, offset = {}, [], 0
    for v in order:
        n, N = lengths[v], 16 * math.ceil(lengths[v] / 16)
        p = snippet_scores(kind, n, gt[offset : offset + N], rng)
        scores[v], offset = (p, n), offset + N
        pred.append(p)
    store = store_of(tmp_path, kind, scores)
    results = {r.video_id: r.labels for r in collect_results(ScoresStore(store), manifest, EvalConfig(convention="rtfm"))}
    np.testing.assert_array_equal(np.concatenate([results[v] for v in order]), gt)  # frame for frame
    want_auc, want_pr = rtfm_metrics(gt, np.concatenate(pred))
    report = report_of(store, manifest, "rtfm")
    assert abs(report["micro_auc"] - want_auc) < TOL and abs(report["ap"] - want_pr) < TOL
    assert report["convention"]["name"] == "rtfm" and report["vadpipe_convention"]["headline"]["micro_auc"]


# ---------------------------------------------------------------- UCF-Crime, intervals, synthetic lengths
def ucf_annotations():
    """Temporal_Anomaly_Annotation.txt as the peers read it: name -> [(s, e)], -1 pairs dropped."""
    text = (require_shared("annotations", "ucf_crime") / "Temporal_Anomaly_Annotation.txt").read_text()
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if parts:
            numbers = [int(x) for x in parts[2:]]
            out[parts[0][: -len(".mp4")]] = [(s, e) for s, e in zip(numbers[::2], numbers[1::2]) if s != -1]
    return out


def synthetic_lengths(annotations, seed, tail=(16, 300)):
    """A video runs ``tail`` frames past its last annotated end (16-300; ``(0, 20)``: the tail
    rules -- floor cuts, clipping, RTFM's e + 1 > N -- come into play); a normal one 100-600."""
    rng = np.random.default_rng(seed)
    return {v: (max(e for _, e in ivs) + int(rng.integers(*tail)) if ivs else int(rng.integers(100, 600)))
            for v, ivs in annotations.items()}


PEERS = {  # convention -> (frames and ground truth of a video, metric): restated above
    "rtfm": (lambda n, ivs: (rtfm_ucf_gt(math.ceil(n / 16), ivs), math.ceil(n / 16)), rtfm_metrics),
    "vadclip": (lambda n, ivs: (vadclip_gt(n // 16, ivs), n // 16), sklearn_metrics),
    "lavad": (lambda n, ivs: (inclusive_gt(n, ivs), None), trapezoid_metrics),
    "anomalyclip": (lambda n, ivs: (inclusive_gt(n, ivs), None), sklearn_metrics),
}


def peer_run(convention, annotations, lengths, scores, exclusive_vadpipe=True):
    gts, preds = [], []
    for v, ivs in annotations.items():
        n, p = lengths[v], scores[v][0]
        if convention == "vadpipe":  # every frame, the manifest's [s, e) (or [s, e + 1) when built inclusive)
            gt = np.zeros(n)
            for s, e in ivs:
                gt[s : e + (0 if exclusive_vadpipe else 1)] = 1
            gts.append(gt)
            preds.append(np.repeat(p, 16)[:n])
            continue
        make_gt, metric = PEERS[convention]
        gt, snippets = make_gt(n, ivs)
        gts.append(gt)
        if convention == "rtfm":
            preds.append(p)  # repeated inside rtfm_metrics
        elif snippets is not None:
            preds.append(np.repeat(p[:snippets], 16))
        else:
            preds.append(np.repeat(p, 16)[:n])  # LAVAD eval.py:78, 146
    metric = sklearn_metrics if convention == "vadpipe" else PEERS[convention][1]
    return metric(np.concatenate(gts), np.concatenate(preds))


@pytest.mark.parametrize("kind, tail", [*((k, "long") for k in KINDS), ("structured", "tight")])
@pytest.mark.parametrize("end", ["exclusive", "inclusive"])
def test_ucf_crime_every_convention_against_the_peers(kind, end, tail):
    annotations = ucf_annotations()
    manifest = build_benchmark_manifest("ucf_crime", ANNOTATIONS / "ucf_crime", "/nonexistent", end=end)
    lengths = synthetic_lengths(annotations, seed=1, tail=(16, 300) if tail == "long" else (0, 20))
    rng = np.random.default_rng(KINDS.index(kind))
    scores = {}
    for v, ivs in annotations.items():
        scores[v] = (snippet_scores(kind, lengths[v], inclusive_gt(lengths[v], ivs), rng), lengths[v])
    store = scores_of(scores)  # in memory: the store's float64 round trip is checked on ShanghaiTech
    for convention in ("vadpipe", *PEERS):
        want_auc, want_ap = peer_run(convention, annotations, lengths, scores, exclusive_vadpipe=end == "exclusive")
        report = report_of(store, manifest, convention)
        assert abs(report["micro_auc"] - want_auc) < TOL, (convention, report["micro_auc"], want_auc)
        assert abs(report["ap"] - want_ap) < TOL, (convention, report["ap"], want_ap)
        if tail == "long":
            assert report["clipped_gt_frames"]["total"] == 0


# ---------------------------------------------------------------- XD-Violence
def xd_annotations():
    text = (require_shared("annotations", "xd_violence") / "annotations.txt").read_text()
    out = {}
    for line in text.splitlines():
        parts = line.split()
        name = parts[0][: -len(".mp4")] if parts[0].endswith(".mp4") else parts[0]
        numbers = [int(x) for x in parts[1:]]
        out[name] = list(zip(numbers[::2], numbers[1::2]))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_xd_violence_every_convention_against_the_peers(kind):
    manifest = build_benchmark_manifest("xd_violence", ANNOTATIONS / "xd_violence", "/nonexistent")
    annotations = {e.video_id: [] for e in manifest.select("test")}
    annotations.update(xd_annotations())
    lengths = synthetic_lengths(annotations, seed=2)
    rng = np.random.default_rng(10 + KINDS.index(kind))
    scores = {v: (snippet_scores(kind, lengths[v], inclusive_gt(lengths[v], ivs), rng), lengths[v])
              for v, ivs in annotations.items()}
    store = scores_of(scores)
    for convention in ("vadpipe", "vadclip", "lavad", "anomalyclip"):
        want_auc, want_ap = peer_run(convention, annotations, lengths, scores)
        report = report_of(store, manifest, convention)
        assert abs(report["micro_auc"] - want_auc) < TOL and abs(report["ap"] - want_ap) < TOL, convention
    # XD-Violence's authors: 16 * floor((n - 1) / 16) frames, AP = auc(recall, precision)
    gts, preds = [], []
    for v, ivs in annotations.items():
        n, p = lengths[v], scores[v][0]
        gt = xdviodet_gt(n, ivs)
        gts.append(gt)
        preds.append(np.repeat(p[: len(gt) // 16], 16))
    precision, recall, _ = precision_recall_curve(list(np.concatenate(gts)), np.concatenate(preds))
    report = report_of(store, manifest, "xdviodet")
    assert abs(report["ap"] - auc(recall, precision)) < TOL
    assert abs(report["micro_auc"] - roc_auc_score(np.concatenate(gts), np.concatenate(preds))) < TOL
    if kind == "ties":  # the two APs part ways on tied scores: the reason the convention exists
        assert abs(report["ap"] - report["vadpipe_convention"]["ap"]) > 1e-3


# ---------------------------------------------------------------- Avenue / Ped2 vs MNAD
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dataset", ["avenue", "ped2"])
def test_one_class_mnad_against_its_label_arrays(dataset, kind):
    folder = require_shared("annotations", "avenue" if dataset == "avenue" else "ucsd_ped2")
    manifest = build_benchmark_manifest(dataset, folder, "/nonexistent")
    labels = np.load(folder / f"frame_labels_{dataset}.npy")  # MNAD data/frame_labels_*.npy, shape (1, N)
    test = manifest.select("test")
    ped2 = (180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180)  # MNAD's clip lengths
    lengths = [e.num_frames for e in test] if dataset == "avenue" else list(ped2)
    assert sum(lengths) == labels.shape[1]
    rng = np.random.default_rng(20 + KINDS.index(kind))
    scores, per_video, label_length = {}, [], 0
    for e, n in zip(test, lengths):
        y = labels[0][label_length : label_length + n]
        s = rng.random(n) if kind == "random" else 0.5 * y + rng.random(n) + rng.random()  # per-video offset
        s = np.round(s, 1) if kind == "ties" else s
        scores[e.video_id] = (s, n)
        per_video.append((y, s))
        label_length += n
    # MNAD Evaluate.py:106-112, 163-170 and utils.py:45-66: labels from frame 4 of each video; a
    # normality score ("psnr", higher is normal) min-max normalised per video; AUC against 1 - labels
    labels_list, anomaly_score_total_list = [], []
    for y, s in per_video:
        labels_list = np.append(labels_list, y[4:])
        psnr_list = list(-s[4:])
        anomaly_score_total_list += [(p - np.min(psnr_list)) / (np.max(psnr_list) - np.min(psnr_list)) for p in psnr_list]
    want = roc_auc_score(y_true=1 - labels_list, y_score=np.array(anomaly_score_total_list))
    report = report_of(scores_of(scores, step=1), manifest, "mnad")
    assert abs(report["micro_auc"] - want) < TOL
    assert report["num_frames"] == labels.shape[1] - 4 * len(test)


# ---------------------------------------------------------------- recognition: AnomalyCLIP
def test_anomalyclip_recognition_video_labels_and_zero_auroc(tmp_path):
    """anomaly_clip_module.py:510-592: per frame the video's class (s <= f <= e) or Normal; one-vs-rest
    AUROC / AP per class with a 1 - p_A Normal column; Normal dropped; 0 -> NaN; nanmean."""
    classes = ["Arson", "Fighting", "Riot"]
    videos = [("a", "Arson", [(10, 30)]), ("b", "Fighting", [(5, 20), (40, 50)]), ("c", "Fighting", [(0, 12)]),
              ("d", "normal", []), ("e", "normal", [])]
    entries = [VideoEntry(v, "x", "test", label, tuple(Interval(s, e) for s, e in ivs), num_frames=64)
               for v, label, ivs in videos]
    entries.append(VideoEntry("f", "x", "test", "Riot", (Interval(20, 40, "Riot"), Interval(30, 50, "Fighting")),
                              num_frames=64))  # two classes: AnomalyCLIP gives every frame the video's label
    manifest = Manifest(entries)
    rng = np.random.default_rng(3)
    scores, frames_y, frames_p = {}, [], []
    for e in entries:
        y = inclusive_gt(64, [(iv.start, iv.end - 1) for iv in e.intervals])  # manifest [s, e) is s <= f <= e - 1
        probs = rng.random((64, 3)) * 0.5
        if not e.is_normal:
            probs[y > 0, classes.index(e.label)] += 0.6
        probs[:, 2] = 1 - probs[:, 2] if e.label == "Riot" else probs[:, 2]  # Riot ranked backwards
        p_a = probs.sum(axis=1) / 3
        scores[e.video_id] = Scores(np.arange(64), p_a, 64, probs, tuple(classes))
        frames_y.append(np.where(y > 0, classes.index(e.label) if not e.is_normal else 3, 3))
        frames_p.append(probs)
    path = write_scores(tmp_path / "s.zarr", scores, {"encoder": "k"})
    labels, probs = np.concatenate(frames_y), np.concatenate(frames_p)
    per_class_auc = np.array([roc_auc_score(labels == c, probs[:, c]) for c in range(3)])
    per_class_ap = np.array([average_precision_score(labels == c, probs[:, c]) for c in range(3)])
    per_class_auc[per_class_auc == 0] = np.nan
    per_class_ap[per_class_ap == 0] = np.nan
    report = evaluate(path, manifest, None, EvalConfig(convention="anomalyclip", plots=False))
    assert abs(report["mauc"] - np.nanmean(per_class_auc)) < TOL and abs(report["map"] - np.nanmean(per_class_ap)) < TOL


def test_anomalyclip_drops_a_class_whose_auroc_is_zero(tmp_path):
    entries = [VideoEntry("a", "x", "test", "Arson", (Interval(0, 10),), num_frames=20),
               VideoEntry("b", "x", "test", "Riot", (Interval(0, 10),), num_frames=20)]
    probs = np.zeros((20, 2))
    probs[:10, 0] = 1.0  # Arson: perfect in video a
    probs[:, 1] = 1.0  # and Riot high on every frame of a, where there is none
    scores = {"a": Scores(np.arange(20), np.r_[np.ones(10), np.zeros(10)], 20, probs, ("Arson", "Riot")),
              "b": Scores(np.arange(20), np.r_[np.ones(10), np.zeros(10)], 20, np.c_[np.zeros(20), np.r_[np.zeros(10), np.ones(10)]],
                          ("Arson", "Riot"))}  # Riot: exactly backwards, AUROC 0
    path = write_scores(tmp_path / "s.zarr", scores, {"encoder": "k"})
    manifest = Manifest(entries)
    ours = evaluate(path, manifest, None, EvalConfig(plots=False))["recognition"]
    theirs = evaluate(path, manifest, None, EvalConfig(convention="anomalyclip", plots=False))["recognition"]
    assert [c["auc"] for c in ours["classes"]] == [1.0, 0.0]
    assert ours["mauc"] == 0.5 and theirs["mauc"] == 1.0


# ---------------------------------------------------------------- past the end, refusals, reports
def test_an_interval_past_the_decoded_end_is_clipped_and_counted(tmp_path):
    manifest = Manifest([VideoEntry("a", "x", "test", "Fighting", (Interval(40, 70),)),
                         VideoEntry("b", "x", "test", "normal")])
    path = store_of(tmp_path, "s", {"a": (np.r_[0.1, 0.2, 0.9, 0.8], 50), "b": (np.r_[0.1, 0.2, 0.1, 0.3], 64)})
    report = evaluate(path, manifest, tmp_path / "r", EvalConfig(plots=False))
    assert report["clipped_gt_frames"] == {"total": 20, "videos": {"a": 20}}
    assert report["videos"][0]["clipped_gt_frames"] == 20 and report["num_anomalous_frames"] == 10
    assert "20 annotated anomalous frames lie past" in (tmp_path / "r" / "report.md").read_text()
    rtfm = evaluate(path, manifest, None, EvalConfig(plots=False, convention="rtfm"))  # 64 frames: 14 of them kept
    assert rtfm["clipped_gt_frames"]["total"] == 6 and rtfm["num_frames"] == 128


def test_convention_options_are_checked():
    with pytest.raises(VadpipeError, match=r"unknown convention 'rtf' \(choose from vadpipe, rtfm"):
        EvalConfig(convention="rtf")
    with pytest.raises(VadpipeError, match="--expansion linear goes only with --convention vadpipe"):
        EvalConfig(convention="rtfm", expansion="linear")
    old = build_benchmark_manifest("ucf_crime", ANNOTATIONS / "ucf_crime", "/nonexistent", end="inclusive")
    old = replace(old, meta={k: v for k, v in old.meta.items() if k != "end_offset"})  # as vadpipe 0.2 wrote it
    scores = scores_of({e.video_id: (np.zeros(1), 10**5) for e in old.select("test")})
    for convention in ("lavad", "xdviodet", "mnad"):  # also where the peer has no UCF-Crime rule of its own
        with pytest.raises(VadpipeError, match="built by vadpipe 0.2 with end=inclusive"):
            evaluate(scores, old, None, EvalConfig(convention=convention, plots=False))


def test_compare_refuses_runs_of_different_conventions(tmp_path):
    from vadpipe.evaluate import compare_reports

    manifest = Manifest([VideoEntry("a", "x", "test", "Fighting", (Interval(20, 40),), num_frames=64)])
    path = store_of(tmp_path, "s", {"a": (np.r_[0.1, 0.9, 0.8, 0.2], 64)})
    for conv in ("vadpipe", "lavad", "lavad2"):
        evaluate(path, manifest, tmp_path / conv, EvalConfig(plots=False, convention=conv.rstrip("2")))
    assert compare_reports([tmp_path / "lavad", tmp_path / "lavad2"])["protocol"]["convention"] == "lavad"
    with pytest.raises(VadpipeError, match="different evaluation convention \\(vadpipe vs lavad"):
        compare_reports([tmp_path / "vadpipe", tmp_path / "lavad"])


def test_report_names_the_convention_and_keeps_vadpipes_headline(tmp_path):
    from typer.testing import CliRunner

    from vadpipe.cli import app

    manifest = Manifest([VideoEntry("a", "x", "test", "Fighting", (Interval(20, 40),), num_frames=70),
                         VideoEntry("b", "x", "test", "normal", num_frames=70)])
    manifest.save(tmp_path / "m.csv")
    path = store_of(tmp_path, "s", {"a": (np.r_[0.1, 0.9, 0.8, 0.2, 0.3], 70), "b": (np.r_[0.1, 0.2, 0.5, 0.3, 0.2], 70)})
    result = CliRunner().invoke(app, ["evaluate", str(path), "--manifest", str(tmp_path / "m.csv"), "-o",
                                      str(tmp_path / "r"), "--convention", "vadclip", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "convention=vadclip" in result.output and "under vadpipe's convention: micro AUC" in result.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "convention: **vadclip**" in md and "under vadpipe's convention" in md
    report = evaluate(path, manifest, None, EvalConfig(plots=False, convention="vadclip"))
    assert report["num_frames"] == 2 * 64  # 16 * floor(70 / 16) frames a video
    assert set(report["vadpipe_convention"]["headline"]) == {"micro_auc"}


def test_scores_keep_float64_and_expansion_errors_name_the_frame(tmp_path):
    """Two scores float32 would merge stay two (a tie would move an AUC); a sampled frame before
    the first or past the last decoded frame is one clear line."""
    from vadpipe.evaluate.metrics import expand
    from vadpipe.errors import VadpipeError
    from vadpipe.scores import Scores, ScoresStore, write_scores

    close = np.array([0.5, 0.5 + 1e-12, 0.25])
    assert np.float32(close[0]) == np.float32(close[1])
    path = write_scores(tmp_path / "s.zarr", {"v": Scores(np.arange(3), close, 3)}, {"head": {"head": "x"}})
    back = ScoresStore(path).read("v").score
    assert back.dtype == np.float64 and back[0] != back[1]
    np.testing.assert_array_equal(back, close)
    from vadpipe.scores import InMemoryScores

    with pytest.raises(VadpipeError, match="class probabilities but no class names"):
        InMemoryScores({"v": Scores(np.arange(3), close, 3, class_probs=np.zeros((3, 2)))})
    for index, bad in (([-1, 0, 1], -1), ([0, 1, 3], 3)):
        with pytest.raises(VadpipeError, match=f"sampled frame {bad} lies outside a video of 3 frames"):
            expand(np.array(index), np.zeros(3), 3)


def test_ped2_mat_ground_truth_starts_six_clips_later():
    """Ped2 --gt ped2.mat (the frame-prediction line's file) vs the official UCSDped2.m: six
    clips start at frame 5 instead of 1, 24 anomalous frames fewer; MNAD's labels equal the .m."""
    folder = require_shared("annotations", "ucsd_ped2")
    official = build_benchmark_manifest("ped2", folder, "/nonexistent")
    mat = build_benchmark_manifest("ped2", folder, "/nonexistent", gt="ped2.mat")
    lengths = (180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180)  # the clips' frame counts
    later = 0
    for a, b, n in zip(official.select("test"), mat.select("test"), lengths):
        ya, yb = a.frame_labels(n), b.frame_labels(n)
        assert (yb <= ya).all()
        if (ya != yb).any():
            later += 1
            assert int(np.flatnonzero(yb)[0]) == 4
    assert later == 6
    total = sum(e.frame_labels(n).sum() for e, n in zip(official.select("test"), lengths))
    assert total - sum(e.frame_labels(n).sum() for e, n in zip(mat.select("test"), lengths)) == 24
    mnad = np.load(folder / "frame_labels_ped2.npy")[0]
    assert np.array_equal(np.concatenate([e.frame_labels(n) for e, n in zip(official.select("test"), lengths)]), mnad)


def test_a_convention_with_its_own_end_rule_compares_manifests_built_either_way(tmp_path):
    """Under lavad / rtfm / vadclip / anomalyclip the end rule is the convention's: UCF-Crime
    manifests built with --end exclusive and inclusive give the same ground truth, so --compare
    accepts them; the report says which rule it applied."""
    from vadpipe.evaluate.compare import compare_reports

    annotations = ucf_annotations()
    lengths = synthetic_lengths(annotations, seed=3)
    scores = {v: (np.random.default_rng(0).random(-(-lengths[v] // 16)), lengths[v]) for v in annotations}
    store = scores_of(scores)
    for end in ("exclusive", "inclusive"):
        manifest = build_benchmark_manifest("ucf_crime", ANNOTATIONS / "ucf_crime", "/nonexistent", end=end)
        report = evaluate(store, manifest, tmp_path / end, EvalConfig(plots=False, convention="lavad"))
        assert report["protocol"]["interval_convention"].startswith("lavad's rule for ucf_crime: an annotated pair")
    comparison = compare_reports([tmp_path / "exclusive", tmp_path / "inclusive"])
    assert comparison["protocol"]["convention"] == "lavad"
    for end in ("exclusive", "inclusive"):  # under vadpipe's own convention they differ
        manifest = build_benchmark_manifest("ucf_crime", ANNOTATIONS / "ucf_crime", "/nonexistent", end=end)
        evaluate(store, manifest, tmp_path / f"v-{end}", EvalConfig(plots=False))
    with pytest.raises(VadpipeError, match="ground truth \\(end=exclusive vs inclusive\\)"):
        compare_reports([tmp_path / "v-exclusive", tmp_path / "v-inclusive"])
