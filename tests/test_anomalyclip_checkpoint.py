"""The authors' AnomalyCLIP checkpoints: the restricted torch-file reader, the key mapping, the
conversion to a run folder (scores = the same weights loaded natively), and the temporal model
against the ``axial-attention`` package the authors import (a dev extra)."""

import functools
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch

from vadpipe.errors import VadpipeError
from vadpipe.heads import load_head
from vadpipe.heads.anomalyclip import AnomalyClipConfig, AnomalyClipNet, AxialTemporalModel
from vadpipe.heads.anomalyclip.checkpoint import convert_checkpoint, read_torch_file, temporal_state
from vadpipe.heads.anomalyclip.head import AnomalyClipHead
from vadpipe.heads.prompt_learner import PromptLearner
from vadpipe.heads.training import module_state

from conftest import TINY, TINY_KEY, planted_cache

CLASSES = ("Abuse", "Normal", "Road_Accidents")  # the authors' csv order, Normal inside, '_' spelled as theirs
E, DEPTH, S, F_ = 32, 2, 32, 16


def authors_temporal_keys(state: dict, depth: int, concat_cols: int, prefix="net.temporal_model.") -> dict:
    """vadpipe's AxialTemporalModel state -> the authors' TemporalModel keys (lucidrains' names),
    written out independently of vadpipe's converter."""
    w = state["proj.weight"]
    if concat_cols:  # vadpipe: [x, S(x)]; the authors: [logits, x]
        w = np.concatenate([w[:, -concat_cols:], w[:, :-concat_cols]], axis=1)
    out = {"projection.weight": w, "projection.bias": state["proj.bias"],
           "axial_attn.pos_emb.param_0": state["pos_segment"].transpose(0, 3, 1, 2),
           "axial_attn.pos_emb.param_1": state["pos_frame"].transpose(0, 3, 1, 2),
           "classifier.layer_norm.weight": state["norm.weight"], "classifier.layer_norm.bias": state["norm.bias"],
           "classifier.linear.weight": state["classifier.weight"], "classifier.linear.bias": state["classifier.bias"]}
    for j in range(depth):
        for mine, fg in (("0", "f"), ("1", "g")):
            base = f"axial_attn.layers.blocks.{2 * j}.{fg}.net.fn."
            for n in ("to_q.weight", "to_kv.weight", "to_out.weight", "to_out.bias"):
                out[base + "fn." + n] = state[f"layers.{j}.{mine}.{n}"]
            out[base + "norm.weight"] = state[f"layers.{j}.{mine}.norm.weight"]
            out[base + "norm.bias"] = state[f"layers.{j}.{mine}.norm.bias"]
        for mine, fg in (("2", "f"), ("3", "g")):
            base = f"axial_attn.layers.blocks.{2 * j + 1}.{fg}.net."
            out[base + "0.g"] = state[f"layers.{j}.{mine}.norm.weight"].reshape(1, -1, 1, 1)
            out[base + "0.b"] = state[f"layers.{j}.{mine}.norm.bias"].reshape(1, -1, 1, 1)
            for conv, i in (("conv_in", "1"), ("conv_out", "3")):
                out[base + f"{i}.weight"] = state[f"layers.{j}.{mine}.{conv}.weight"]
                out[base + f"{i}.bias"] = state[f"layers.{j}.{mine}.{conv}.bias"]
    return {prefix + k: v for k, v in out.items()}


class Pwned:
    """A pickle that runs a command when an unrestricted unpickler loads it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def released(tmp_path_factory, tiny_encoder):
    """A native run and the same weights as the authors release them (last.ckpt + ncentroid.pt)."""
    root = tmp_path_factory.mktemp("released")
    torch.manual_seed(0)
    model = tiny_encoder.model
    learner = PromptLearner(model, tiny_encoder.tokenizer, [c.replace("_", " ") for c in CLASSES], n_ctx=8,
                            train_projection=True, trim=False)  # the authors' buffers: all 77 positions
    with torch.no_grad():
        learner.ctx.normal_(0, 0.5)
        learner.text_projection.add_(0.05 * torch.randn_like(learner.text_projection))  # fine-tuned
        prototype = torch.randn(64)
        text = learner()
        directions = text[[0, 2]] - prototype
    cfg = AnomalyClipConfig(embed_dim=E, depth=DEPTH, concat_selector=True, geometry="raw")
    net = AnomalyClipNet(64, 2, cfg)
    with torch.no_grad():
        net.prototype.copy_(prototype)
        net.directions.copy_(directions)
        net.selector.bn.running_mean.copy_(torch.randn(2))
        net.selector.bn.running_var.copy_(torch.rand(2) + 0.5)
        for p in net.temporal.parameters():
            p.add_(0.02 * torch.randn_like(p))
    native = AnomalyClipHead(embed_dim=E, depth=DEPTH, concat_selector=True, device="cpu")
    native.encoder, native.class_names_ = TINY_KEY, ("Abuse", "Road_Accidents")
    native.input_recipes_ = {"emb": {"model": TINY, "pretrained": "random", "dim": 64, "normalised": False}}
    native._load_state(module_state(net), {"class_texts": ["Abuse", "Road Accidents"]})
    native.fitted_ = True
    native.save(root / "native")

    state = OrderedDict()
    state["net.prompt_learner.ctx"] = learner.ctx.detach()
    state["net.prompt_learner.token_prefix"] = learner.token_prefix
    state["net.prompt_learner.token_suffix"] = learner.token_suffix
    for k, v in model.state_dict().items():
        if k.startswith("visual."):
            state["net.image_encoder." + k[len("visual."):]] = v
        elif k == "token_embedding.weight":
            state["net.token_embedding.weight"] = v
        elif k == "text_projection":
            state["net.text_encoder.text_projection"] = learner.text_projection.detach()
        elif k.startswith(("transformer.", "ln_final.", "positional_embedding")):
            state["net.text_encoder." + k] = v
    state["net.selector_model.logit_scale"] = torch.tensor(4.6052)
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        state[f"net.selector_model.bn_layer.{k}"] = getattr(net.selector.bn, k)
    temporal = {k: v.numpy() for k, v in net.temporal.state_dict().items()}
    for k, v in authors_temporal_keys(temporal, DEPTH, concat_cols=2).items():
        state[k] = torch.from_numpy(np.ascontiguousarray(v))

    # Lightning's hyper-parameters: objects of the authors' modules, a partial, and a booby trap
    loss_module = types.ModuleType("src.models.components.loss")

    class ComputeLoss:
        def __init__(self):
            self.normal_id, self.lambda_smooth = 1, 8e-4

    ComputeLoss.__module__, ComputeLoss.__qualname__ = loss_module.__name__, "ComputeLoss"
    loss_module.ComputeLoss = ComputeLoss
    names = ["src", "src.models", "src.models.components", loss_module.__name__]
    for name in names[:-1]:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[loss_module.__name__] = loss_module
    marker = root / "pwned"
    try:
        torch.save({"state_dict": state, "epoch": 49, "pytorch-lightning_version": "1.8.3",
                    "hyper_parameters": {"loss": ComputeLoss(), "num_classes": 3, "trap": Pwned(marker),
                                         "optimizer": functools.partial(torch.optim.AdamW, weight_decay=0.2)}},
                   root / "last.ckpt")
    finally:
        for name in names:
            del sys.modules[name]
    torch.save(prototype.clone(), root / "ncentroid.pt")
    return root, marker, state


def test_the_reader_rebuilds_tensors_and_runs_nothing(released):
    root, marker, ref = released
    ckpt = read_torch_file(root / "last.ckpt")
    assert not marker.exists()  # the os.system pickle was not executed
    assert ckpt["epoch"] == 49 and ckpt["hyper_parameters"]["num_classes"] == 3
    assert type(ckpt["hyper_parameters"]["loss"]).__module__ == "vadpipe.inert"
    assert list(ckpt["state_dict"]) == list(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(ckpt["state_dict"][k], v.numpy(), err_msg=k)
    m = read_torch_file(root / "ncentroid.pt")
    assert m.dtype == np.float32 and m.shape == (64,)
    # a transposed (non-contiguous) tensor, bf16 and a scalar come back as torch has them
    odd = {"t": torch.arange(12.0).view(3, 4).t(), "bf": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
           "s": torch.tensor(3, dtype=torch.int64)}
    torch.save(odd, root / "odd.pt")
    back = read_torch_file(root / "odd.pt")
    np.testing.assert_array_equal(back["t"], odd["t"].numpy())
    np.testing.assert_array_equal(back["bf"], [1.5, -2.0])
    assert back["s"] == 3 and back["s"].shape == ()


def test_a_converted_checkpoint_scores_as_the_same_weights_loaded_natively(released, tmp_path):
    root, _, _ = released
    run = convert_checkpoint(root / "last.ckpt", root / "ncentroid.pt", tmp_path / "converted",
                             classes=list(CLASSES), encoder=TINY_KEY, model=TINY, quick_gelu=False)
    converted, native = load_head(run, device="cpu"), load_head(root / "native", device="cpu")
    assert converted.class_names_ == ("Abuse", "Road_Accidents")
    assert converted.config.geometry == "raw" and converted.config.concat_selector and converted.config.depth == DEPTH
    rng = np.random.default_rng(0)
    lengths = (5, 512, 700)
    cache = planted_cache(tmp_path / "c.zarr", [{"video_id": f"v{T}", "emb": 8 * rng.normal(size=(T, 64))} for T in lengths])
    ids = [f"v{T}" for T in lengths]
    a, b = converted.score_videos(cache, ids), native.score_videos(cache, ids)
    for vid in ids:
        np.testing.assert_allclose(a[vid].score, b[vid].score, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a[vid].class_probs, b[vid].class_probs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(converted.net_.directions.numpy(), native.net_.directions.numpy(), atol=1e-6)


def test_a_checkpoint_of_other_classes_is_refused(released, tmp_path):
    root, _, _ = released
    with pytest.raises(VadpipeError, match=r"prompt tokens \(token_suffix\) are not those of the classes") as err:
        convert_checkpoint(root / "last.ckpt", root / "ncentroid.pt", tmp_path / "x",
                           classes=["Abuse", "Normal", "Riot"], encoder=TINY_KEY, model=TINY, quick_gelu=False)
    assert "\n" not in str(err.value)
    with pytest.raises(VadpipeError, match="ctx is"):
        convert_checkpoint(root / "last.ckpt", root / "ncentroid.pt", tmp_path / "x", dataset="ucf_crime",
                           encoder=TINY_KEY, model=TINY, quick_gelu=False)
    (tmp_path / "junk.ckpt").write_bytes(b"not a zip")
    with pytest.raises(VadpipeError, match="not a torch.save zip archive"):
        read_torch_file(tmp_path / "junk.ckpt")


def test_the_temporal_model_matches_the_axial_attention_package():
    """vadpipe's AxialTemporalModel = Linear -> lucidrains' AxialImageTransformer (reversible,
    axial position embeddings (S, F)) -> LayerNorm -> Linear, as the authors build it, with the
    weights copied through the converter's key mapping."""
    import axial_attention as axial  # the dev extra (README's install): this check must not be skipped
    torch.manual_seed(0)
    din, depth, heads = 96, 2, 8
    proj, norm, linear = torch.nn.Linear(din, E), torch.nn.LayerNorm(E), torch.nn.Linear(E, 1)
    transformer = axial.AxialImageTransformer(dim=E, depth=depth, heads=heads, reversible=True,
                                              axial_pos_emb_shape=(S, F_)).eval()
    theirs = {"projection." + k: v for k, v in proj.state_dict().items()}
    theirs.update({"axial_attn." + k: v for k, v in transformer.state_dict().items()})
    theirs.update({"classifier.layer_norm." + k: v for k, v in norm.state_dict().items()})
    theirs.update({"classifier.linear." + k: v for k, v in linear.state_dict().items()})
    theirs = {"net.temporal_model." + k: v.numpy() for k, v in theirs.items()}
    net = AxialTemporalModel(din, E, depth, heads, S, F_).eval()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in temporal_state(theirs, depth).items()}, strict=True)
    x = torch.randn(3, S, F_, din)
    with torch.no_grad():
        h = proj(x).permute(0, 3, 1, 2)  # (B E S F): the authors' "b d n l"
        ref = linear(norm(transformer(h).permute(0, 2, 3, 1))).squeeze(-1)
        got = net(x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)  # ChanLayerNorm's eps sits on the std


def test_convert_command(released, tmp_path):
    from typer.testing import CliRunner

    from vadpipe.cli import app

    root, _, _ = released
    args = ["convert", "anomalyclip", str(root / "last.ckpt"), "--ncentroid", str(root / "ncentroid.pt"),
            "--classes", ",".join(CLASSES), "--encoder", TINY_KEY, "--model", TINY, "--no-quick-gelu",
            "-o", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_head(tmp_path / "run").class_names_ == ("Abuse", "Road_Accidents")
    result = CliRunner().invoke(app, ["convert", "rtfm", str(root / "last.ckpt"), "--ncentroid", "x", "-o", "y"])
    assert result.exit_code == 2 and "checkpoints of 'rtfm' are not known" in result.output


def test_the_reader_refuses_a_tensor_reaching_outside_its_storage(tmp_path):
    """A file's sizes and strides are not trusted: a tensor that would read past its storage (an
    information leak, or a crash) is refused with one line."""
    import io
    import pickle
    import zipfile

    import torch._utils

    class FakeStorage:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 4) if isinstance(obj, FakeStorage) else None

    class FakeTensor:
        def __init__(self, stride):
            self.stride = stride

        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (FakeStorage(), 0, (4,), (self.stride,), False, OrderedDict())

    for stride, ok in ((1, True), (2 ** 20, False), (2 ** 40, False)):
        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump({"t": FakeTensor(stride)})
        path = tmp_path / f"s{stride}.pt"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", buffer.getvalue())
            archive.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
        if ok:
            np.testing.assert_array_equal(read_torch_file(path)["t"], np.arange(4, dtype=np.float32))
        else:
            with pytest.raises(VadpipeError, match="unreadable torch file .*a tensor reaching element"):
                read_torch_file(path)
