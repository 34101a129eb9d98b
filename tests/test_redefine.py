"""Text-guided test-time redefinition (Gao et al. 2024, eq. 10) on top of any head's scores.

Frames are planted along the tiny model's text embedding of a phrase, so "matches the
phrase" is known exactly: those frames, and only those, must move.
"""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vadpipe.cli import app
from vadpipe.data_manifests import Interval, Manifest, VideoEntry
from vadpipe.errors import VadpipeError
from vadpipe.heads import get_head, load_head
from vadpipe.heads.redefine import redefine
from vadpipe.scores import Scores, ScoresStore

from conftest import TINY_KEY, planted_cache

D = 64
BIKE, SMOKE = "a person riding a bike", "smoke"
THRESHOLD = 0.7  # planted frames score ~1 against their phrase; the others < 0.45 here
BIKE_FRAMES, SMOKE_FRAMES = np.zeros(30, bool), np.zeros(30, bool)  # in each 30-frame test video
BIKE_FRAMES[8:13] = SMOKE_FRAMES[18:23] = True
OTHER_FRAMES = ~(BIKE_FRAMES | SMOKE_FRAMES)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_encoder):
    """Normal frames near a random centre; in each test video, BIKE_FRAMES along the BIKE
    text direction and SMOKE_FRAMES along the SMOKE one."""
    bike, smoke = tiny_encoder.encode_text([BIKE, SMOKE])
    rng = np.random.default_rng(0)
    centre = rng.normal(size=D)
    centre /= np.linalg.norm(centre)
    rows, entries = [], []
    for i in range(3):
        rows.append({"video_id": f"tr{i}", "emb": centre + 0.08 * rng.normal(size=(30, D))})
        entries.append(VideoEntry(f"tr{i}", "x", "train", "normal"))
    for i in range(3):
        emb = centre + 0.08 * rng.normal(size=(30, D))
        emb[BIKE_FRAMES] = bike + 0.01 * rng.normal(size=(5, D))
        emb[SMOKE_FRAMES] = smoke + 0.01 * rng.normal(size=(5, D))
        rows.append({"video_id": f"te{i}", "emb": emb})
        entries.append(VideoEntry(f"te{i}", "x", "test", "smoke", (Interval(18, 23),), num_frames=30))
    root = tmp_path_factory.mktemp("redefine")
    manifest = Manifest(entries)
    manifest.save(root / "m.csv")
    return planted_cache(root / "c.zarr", rows), manifest, root


def similarity(cache, vid, text):
    emb = cache.read(TINY_KEY, vid).emb.astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True) @ text


@pytest.mark.parametrize("name", ["prototype", "zeroshot", "kmeans"])
def test_phrases_move_only_matching_frames(planted, tiny_encoder, name):
    cache, manifest, _ = planted
    head = get_head(name).fit(cache, manifest)
    before = head.score_videos(cache, manifest.ids("test"))
    kw = dict(threshold=THRESHOLD, text_encoder=tiny_encoder)
    lowered = redefine(before, cache, head.encoder, normal=[BIKE], **kw)
    raised = redefine(before, cache, head.encoder, anomaly=[SMOKE], **kw)
    both = redefine(before, cache, head.encoder, normal=[BIKE], anomaly=[SMOKE], **kw)
    bike = tiny_encoder.encode_text([BIKE])[0]
    for vid, s in before.items():
        assert (lowered[vid].score[BIKE_FRAMES] < s.score[BIKE_FRAMES]).all()
        assert (raised[vid].score[SMOKE_FRAMES] > s.score[SMOKE_FRAMES]).all()
        np.testing.assert_array_equal(lowered[vid].score[~BIKE_FRAMES], s.score[~BIKE_FRAMES])  # bit for bit
        np.testing.assert_array_equal(raised[vid].score[~SMOKE_FRAMES], s.score[~SMOKE_FRAMES])
        np.testing.assert_array_equal(both[vid].score[OTHER_FRAMES], s.score[OTHER_FRAMES])
        np.testing.assert_array_equal(both[vid].score[BIKE_FRAMES], lowered[vid].score[BIKE_FRAMES])
        np.testing.assert_array_equal(both[vid].score[SMOKE_FRAMES], raised[vid].score[SMOKE_FRAMES])
        # eq. 10 exactly: S - S_max * gamma * (sim - threshold), gamma = 10 by default
        sim = similarity(cache, vid, bike)[BIKE_FRAMES]
        expected = s.score[BIKE_FRAMES] - s.score.max() * 10.0 * (sim - THRESHOLD)
        np.testing.assert_allclose(lowered[vid].score[BIKE_FRAMES], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(s.frame_index, lowered[vid].frame_index)
    # a paraphrase does not count twice: each frame moves by its best phrase of a kind
    twice = redefine(before, cache, head.encoder, normal=[BIKE, BIKE], **kw)
    np.testing.assert_allclose(twice["te0"].score, lowered["te0"].score, rtol=1e-5)


def test_redefine_checks_its_inputs(planted, tiny_encoder):
    cache, manifest, _ = planted
    s = {"te0": Scores(np.arange(30), np.linspace(0.1, 1, 30, dtype=np.float32), 30)}
    assert redefine(s, cache, TINY_KEY)["te0"] is s["te0"]  # no phrase: nothing to do
    with pytest.raises(VadpipeError, match=r"threshold is a cosine similarity in \[-1, 1\]"):
        redefine(s, cache, TINY_KEY, normal=[BIKE], threshold=2.0, text_encoder=tiny_encoder)
    with pytest.raises(VadpipeError, match="empty normal phrase"):
        redefine(s, cache, TINY_KEY, normal=[" "], text_encoder=tiny_encoder)
    bad = {"te0": Scores(np.array([0, 99]), np.zeros(2, np.float32), 30)}
    with pytest.raises(VadpipeError, match="scored frame 99 is not a sampled frame"):
        redefine(bad, cache, TINY_KEY, anomaly=[SMOKE], text_encoder=tiny_encoder)
    # scores of a subset of frames, in any order, are matched by frame index
    sub = {"te0": Scores(np.array([10, 0]), np.array([0.5, 0.5], np.float32), 30)}
    out = redefine(sub, cache, TINY_KEY, normal=[BIKE], threshold=THRESHOLD, text_encoder=tiny_encoder)
    assert out["te0"].score[0] < 0.5 and out["te0"].score[1] == 0.5


def test_cli_score_with_phrases(planted):
    cache, manifest, root = planted
    run, m = root / "run", root / "m.csv"
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    r = invoke("train", "kmeans", "--cache", cache.path, "--manifest", m, "-o", run, "--param", "num_centers=4")
    assert r.exit_code == 0, r.output
    r = invoke("score", run, "--cache", cache.path, "--manifest", m, "-o", root / "plain.zarr")
    assert r.exit_code == 0, r.output
    r = invoke("score", run, "--cache", cache.path, "--manifest", m, "-o", root / "redef.zarr",
               "--normal", BIKE, "--anomaly", SMOKE, "--redefine-threshold", THRESHOLD)
    assert r.exit_code == 0, r.output
    assert "redefined by text: 15 frames lowered, 15 raised (threshold 0.7)" in r.output
    plain, redef = ScoresStore(root / "plain.zarr"), ScoresStore(root / "redef.zarr")
    meta = redef.meta["redefinition"]
    assert meta["normal"] == [BIKE] and meta["anomaly"] == [SMOKE] and meta["threshold"] == THRESHOLD
    assert plain.meta["redefinition"] is None
    # the stored scores are the library's: load the run, score, redefine
    head = load_head(run)
    library = redefine(head.score_videos(cache, manifest.ids("test")), cache, head.encoder,
                       normal=[BIKE], anomaly=[SMOKE], threshold=THRESHOLD)
    for vid in manifest.ids("test"):
        p, s = plain.read(vid), redef.read(vid)
        np.testing.assert_array_equal(s.score, library[vid].score)
        assert (s.score[BIKE_FRAMES] < p.score[BIKE_FRAMES]).all()
        assert (s.score[SMOKE_FRAMES] > p.score[SMOKE_FRAMES]).all()
        np.testing.assert_array_equal(s.score[OTHER_FRAMES], p.score[OTHER_FRAMES])
    assert json.loads(json.dumps(redef.meta))["redefinition"]["frames_lowered"] == 15
    r = invoke("score", run, "--cache", cache.path, "--manifest", m, "-o", root / "x.zarr", "--redefine-threshold", 0.3)
    assert r.exit_code == 2 and "need a --normal or --anomaly phrase" in r.output
