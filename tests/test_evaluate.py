import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.evaluate import EvalConfig, evaluate, expand, smooth
from vadpipe.evaluate.metrics import VideoResult, frame_metrics
from vadpipe.scores import Scores, write_scores


def test_expansion_by_hand():
    idx, s = np.array([0, 4, 8]), np.array([1.0, 5.0, 9.0])
    np.testing.assert_array_equal(expand(idx, s, 10, "repeat"), [1, 1, 1, 1, 5, 5, 5, 5, 9, 9])
    np.testing.assert_array_equal(expand(idx, s, 10, "nearest"), [1, 1, 1, 5, 5, 5, 5, 9, 9, 9])
    np.testing.assert_array_equal(expand(idx, s, 10, "linear"), [1, 2, 3, 4, 5, 6, 7, 8, 9, 9])
    # samples that do not start at 0: frames before the first take the first score
    np.testing.assert_array_equal(expand(np.array([2, 5]), np.array([3.0, 7.0]), 7, "repeat"), [3, 3, 3, 3, 3, 7, 7])
    with pytest.raises(VadpipeError, match="outside a video of 8 frames"):
        expand(idx, s, 8)
    with pytest.raises(VadpipeError, match="unknown expansion"):
        expand(idx, s, 10, "cubic")


def test_smoothing_by_hand():
    x = np.zeros(21)
    x[10] = 1.0
    y = smooth(x, 2.0)
    assert y.sum() == pytest.approx(1.0) and y.argmax() == 10 and y[8] == pytest.approx(y[12])
    assert y[10] == pytest.approx(1 / np.sqrt(2 * np.pi * 4), rel=0.02)
    assert smooth(x, 0) is x


def test_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    results = []
    for i in range(5):
        y = (rng.random(100) < 0.3).astype(np.uint8)
        results.append(VideoResult(f"v{i}", y, y * 0.5 + rng.random(100)))
    results.append(VideoResult("all_normal", np.zeros(50, np.uint8), rng.random(50)))
    m = frame_metrics(results)
    y = np.concatenate([r.labels for r in results])
    s = np.concatenate([r.scores for r in results])
    assert m.micro_auc == roc_auc_score(y, s)
    assert m.ap == average_precision_score(y, s)
    assert m.macro_auc == np.mean([roc_auc_score(r.labels, r.scores) for r in results[:5]])
    assert "all_normal" not in m.per_video_auc


def test_mismatches_are_errors_naming_videos(tmp_path):
    scores = {"a": Scores(np.arange(0, 10, 2), np.zeros(5, np.float32), 10)}
    path = write_scores(tmp_path / "s.zarr", scores, {})
    m = Manifest([
        VideoEntry("a", "a", "test", "x", (Interval(2, 6),), num_frames=10),
        VideoEntry("b", "b", "test", "normal"),
    ])
    with pytest.raises(VadpipeError, match=r"no scores for 1 of 2 test videos: b"):
        evaluate(path, m)
    m2 = Manifest([VideoEntry("a", "a", "test", "x", (Interval(2, 6),), num_frames=12)])
    with pytest.raises(VadpipeError, match="manifest says 12 frames but the decoded video has 10"):
        evaluate(path, m2)
    m3 = Manifest([VideoEntry("a", "a", "test", "x")])
    with pytest.raises(VadpipeError, match="no frame-level ground truth"):
        evaluate(path, m3)


def test_report_uses_chosen_expansion_and_smoothing(tmp_path):
    s = np.array([0.1, 0.9, 0.2, 0.1], np.float32)
    path = write_scores(tmp_path / "s.zarr", {"a": Scores(np.array([0, 3, 6, 9]), s, 12)}, {"encoder": "k"})
    m = Manifest([VideoEntry("a", "a", "test", "x", (Interval(3, 6),), num_frames=12)])
    for mode, sigma in (("repeat", 0.0), ("linear", 1.5)):
        report = evaluate(path, m, tmp_path / mode, EvalConfig(expansion=mode, sigma=sigma))
        expected = smooth(expand(np.array([0, 3, 6, 9]), s, 12, mode), sigma)
        assert report["micro_auc"] == roc_auc_score(m["a"].frame_labels(12), expected)
        assert report["protocol"]["expansion"] == mode and report["protocol"]["smoothing_sigma"] == sigma
