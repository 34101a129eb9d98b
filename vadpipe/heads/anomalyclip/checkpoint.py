"""The authors' released AnomalyCLIP checkpoints -> a vadpipe run folder.

The authors (lucazanella/AnomalyCLIP @ 6e58b6e) release, per dataset, a Lightning
``last.ckpt`` (the ``AnomalyCLIPModule``'s ``state_dict`` under ``net.``: the CoOp context
``prompt_learner.ctx`` with its token buffers, the whole CLIP model with the fine-tuned
``text_encoder.text_projection``, the selector's batch-norm statistics and the
``temporal_model``) and ``ncentroid.pt`` (one float32 tensor: the normality prototype m,
the mean raw ViT-B/16 feature of the normal training videos). :func:`convert_checkpoint`
turns them into a run folder that ``vadpipe score`` reads, so their published numbers can be
checked on their released features (``cache import``) with no training:

* the class directions are computed once, as their model does on every forward pass:
  the prompts ``[SOS] ctx <class name>. [EOT]`` through the checkpoint's own text tower
  (loaded into the open_clip architecture ``model``, ``ViT-B-16`` with QuickGELU as OpenAI's
  CLIP; no weights are downloaded), d_c = E_T - m for the anomaly classes (Normal's row dropped). The class
  names are the authors' label files (:data:`AUTHORS_CLASSES`); their token embeddings must
  equal the checkpoint's prompt buffers, which catches a wrong dataset or class list;
* the selector's running statistics and the temporal model map key by key
  (:func:`temporal_state`; lucidrains' ``AxialImageTransformer`` names to vadpipe's);
* the run's config is the dataset's preset, ``geometry="raw"``, S = 32, F = 16.

Reading: both files are ``torch.save`` zip archives, read by :func:`read_torch_file` --
a restricted unpickler that rebuilds tensors as numpy arrays and replaces every other
object the file names (Lightning's hyper-parameters hold the authors' loss object, partial
optimiser constructors, OmegaConf configs) by an inert placeholder. Nothing in the file is
imported or executed.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from vadpipe.errors import VadpipeError, one_line
from vadpipe.heads.anomalyclip.config import AUTHORS_CLASSES

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16, "LongStorage": np.int64,
    "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "BFloat16Storage": "bfloat16",
}
_SAFE_BUILTINS = {"set": set, "frozenset": frozenset, "slice": slice, "complex": complex, "bytearray": bytearray}


# ---------------------------------------------------------------- reading torch.save files
class _Inert:
    """What any object a checkpoint names, other than a tensor, becomes: built from anything,
    keeps nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _Storage:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_):
    """The tensor's elements, copied out of its storage after checking that every one lies
    inside it (a file's sizes and strides are not trusted)."""
    size, stride = tuple(size), tuple(stride)
    if not isinstance(storage, np.ndarray) or not all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride)) \
            or len(size) != len(stride):
        raise pickle.UnpicklingError("a tensor with a bad offset, size or stride")
    if 0 in size:
        return np.empty(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= len(storage):
        raise pickle.UnpicklingError(f"a tensor reaching element {last} of a storage of {len(storage)}")
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=tuple(s * itemsize for s in stride),
                                           writeable=False)
    return np.array(view)


def _rebuild_parameter(data, *_):
    return data


class _TorchUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict

            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _Storage(name)
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        return type(name, (_Inert,), {"__module__": "vadpipe.inert"})

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage, key, _location, _numel = pid[:5]
        raw = self.archive.read(f"{self.prefix}data/{key}")
        dtype = _STORAGE_DTYPES[storage.name]
        if dtype == "bfloat16":  # numpy has none: the upper half of a float32
            return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        return np.frombuffer(raw, dtype)


def read_torch_file(path: str | Path):
    """The content of a ``torch.save`` zip archive with tensors as numpy arrays and every other
    object inert (module docstring); nothing in the file is imported or executed."""
    path = Path(path)
    if not path.is_file():
        raise VadpipeError(f"{path}: not found")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pickles) != 1:
                raise VadpipeError(f"{path}: not a torch.save archive (no single data.pkl in it)")
            prefix = pickles[0][: -len("data.pkl")]
            if (archive.read(f"{prefix}byteorder") if f"{prefix}byteorder" in archive.namelist() else b"little") != b"little":
                raise VadpipeError(f"{path}: a big-endian torch file; vadpipe reads little-endian ones")
            return _TorchUnpickler(archive.read(pickles[0]), archive, prefix).load()
    except zipfile.BadZipFile:
        raise VadpipeError(f"{path}: not a torch.save zip archive (files of torch < 1.6 are not read)") from None
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as exc:
        raise VadpipeError(f"{path}: unreadable torch file ({one_line(exc, 120)})") from None


# ---------------------------------------------------------------- key mapping
def temporal_state(authors: dict[str, np.ndarray], depth: int, prefix: str = "net.temporal_model.",
                   num_selector_columns: int = 0) -> dict[str, np.ndarray]:
    """The authors' ``TemporalModel`` weights (``projection``, lucidrains' ``axial_attn``,
    ``classifier``) under vadpipe's :class:`~vadpipe.heads.anomalyclip.net.AxialTemporalModel`
    names. With ``num_selector_columns`` (ShanghaiTech's concatenated S(x)), the projection's
    first columns (the authors put the logits first) move to the end (vadpipe puts x first)."""
    def get(key):
        try:
            return np.asarray(authors[prefix + key], np.float32)
        except KeyError:
            raise VadpipeError(f"checkpoint: no {prefix + key} (is it an AnomalyCLIP checkpoint of depth {depth}?)") from None

    weight = get("projection.weight")  # (E Din)
    if num_selector_columns:
        weight = np.concatenate([weight[:, num_selector_columns:], weight[:, :num_selector_columns]], axis=1)
    out = {
        "proj.weight": weight, "proj.bias": get("projection.bias"),
        "pos_segment": get("axial_attn.pos_emb.param_0").transpose(0, 2, 3, 1),  # (1 E S 1) -> (1 S 1 E)
        "pos_frame": get("axial_attn.pos_emb.param_1").transpose(0, 2, 3, 1),  # (1 E 1 F) -> (1 1 F E)
        "norm.weight": get("classifier.layer_norm.weight"), "norm.bias": get("classifier.layer_norm.bias"),
        "classifier.weight": get("classifier.linear.weight"), "classifier.bias": get("classifier.linear.bias"),
    }
    blocks = "axial_attn.layers.blocks"
    for j in range(depth):
        a, b = 2 * j, 2 * j + 1
        for mine, theirs in (("0", "f"), ("1", "g")):  # attention along segments (f), along frames (g)
            src = f"{blocks}.{a}.{theirs}.net.fn."
            for name in ("to_q.weight", "to_kv.weight", "to_out.weight", "to_out.bias"):
                out[f"layers.{j}.{mine}.{name}"] = get(src + "fn." + name)
            for name in ("weight", "bias"):
                out[f"layers.{j}.{mine}.norm.{name}"] = get(src + "norm." + name)
        for mine, theirs in (("2", "f"), ("3", "g")):  # the two feed-forward blocks
            src = f"{blocks}.{b}.{theirs}.net."
            out[f"layers.{j}.{mine}.norm.weight"] = get(src + "0.g").reshape(-1)  # ChanLayerNorm (1 E 1 1)
            out[f"layers.{j}.{mine}.norm.bias"] = get(src + "0.b").reshape(-1)
            for conv, index in (("conv_in", "1"), ("conv_out", "3")):
                out[f"layers.{j}.{mine}.{conv}.weight"] = get(src + f"{index}.weight")
                out[f"layers.{j}.{mine}.{conv}.bias"] = get(src + f"{index}.bias")
    return out


def _depth_of(state: dict, prefix: str) -> int:
    blocks = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    if not blocks or len(blocks) % 2:
        raise VadpipeError("checkpoint: no temporal_model.axial_attn blocks (is it an AnomalyCLIP checkpoint?)")
    return len(blocks) // 2


def class_directions(state: dict[str, np.ndarray], classes: tuple[str, ...], normal_index: int,
                     prototype: np.ndarray, model: str = "ViT-B-16", quick_gelu: bool = True) -> np.ndarray:
    """d_c = E_T([SOS] ctx <name>. [EOT]) - m of the anomaly classes, through the checkpoint's
    own text tower in the open_clip architecture ``model`` (``quick_gelu``: OpenAI's CLIP, which
    the authors load, uses QuickGELU). ``(C-1, D)`` float32."""
    import open_clip
    import torch

    from vadpipe.encoders.clip import register_tiny_config
    from vadpipe.heads.prompt_learner import PromptLearner

    register_tiny_config()  # vadpipe's own test configs (vadpipe-tiny) next to open_clip's
    clip = open_clip.create_model(model, pretrained=None, force_quick_gelu=quick_gelu)
    tower = {"positional_embedding": "net.text_encoder.positional_embedding",
             "text_projection": "net.text_encoder.text_projection", "token_embedding.weight": "net.token_embedding.weight",
             "ln_final.weight": "net.text_encoder.ln_final.weight", "ln_final.bias": "net.text_encoder.ln_final.bias"}
    weights = {mine: state[theirs] for mine, theirs in tower.items() if theirs in state}
    weights.update({k[len("net.text_encoder."):]: v for k, v in state.items()
                    if k.startswith("net.text_encoder.transformer.")})
    if len(weights) < len(tower):
        missing = sorted(set(tower.values()) - set(state))
        raise VadpipeError(f"checkpoint: no text tower weights ({', '.join(missing[:3])}); is it AnomalyCLIP's last.ckpt?")
    current = clip.state_dict()
    for key, value in weights.items():
        if key not in current or tuple(current[key].shape) != value.shape:
            raise VadpipeError(
                f"checkpoint: {key} {value.shape} does not fit open_clip {model} "
                f"({tuple(current[key].shape) if key in current else 'no such weight'}); pass the model it was trained with"
            )
    clip.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}, strict=False)
    ctx = state.get("net.prompt_learner.ctx")
    if ctx is None or ctx.ndim != 3 or ctx.shape[0] != len(classes):
        shape = None if ctx is None else ctx.shape
        raise VadpipeError(f"checkpoint: net.prompt_learner.ctx is {shape}, expected one context per class of "
                           f"{len(classes)} ({', '.join(classes)})")
    texts = [c.replace("_", " ") for c in classes]
    learner = PromptLearner(clip, open_clip.get_tokenizer(model), texts, n_ctx=ctx.shape[1], train_projection=True,
                            trim=False)  # their buffers hold all 77 positions
    for name in ("token_prefix", "token_suffix"):
        theirs = state.get(f"net.prompt_learner.{name}")
        if theirs is None or theirs.shape != tuple(getattr(learner, name).shape) or \
                not np.allclose(theirs, getattr(learner, name).numpy(), atol=1e-6):
            raise VadpipeError(
                f"checkpoint: its prompt tokens ({name}) are not those of the classes {', '.join(classes)}: "
                "a checkpoint of another dataset, or another class list?"
            )
    with torch.no_grad():
        learner.ctx.copy_(torch.from_numpy(ctx.astype(np.float32)))
        text = learner()  # (C D), raw E_T, as the authors' selector receives it
    keep = [i for i in range(len(classes)) if i != normal_index]
    return (text[keep] - torch.from_numpy(prototype.astype(np.float32))).numpy()


def convert_checkpoint(ckpt: str | Path, ncentroid: str | Path, out_dir: str | Path, dataset: str | None = None,
                       classes: list[str] | None = None, encoder: str = "ViT-B-16:openai", model: str = "ViT-B-16",
                       quick_gelu: bool = True) -> Path:
    """``last.ckpt`` + ``ncentroid.pt`` -> a vadpipe ``anomalyclip`` run folder in ``out_dir``.

    ``dataset`` (``ucf_crime``, ``shanghaitech``, ``xd_violence``) gives the authors' class list and
    the preset; or ``classes``: the class names in the authors' id order, Normal included.
    ``encoder``: the cache key the run will score (the authors' features are ViT-B/16's);
    ``model`` and ``quick_gelu``: the architecture of the checkpoint's text tower (OpenAI's
    ViT-B/16: QuickGELU).
    """
    from vadpipe import __version__
    from vadpipe.encoders.spec import embed_dim, parse_encoder, trained_with_quick_gelu
    from vadpipe.heads.anomalyclip.head import AnomalyClipHead

    if dataset is not None and dataset not in AUTHORS_CLASSES:
        raise VadpipeError(f"convert anomalyclip: unknown dataset {dataset!r} (known: {', '.join(AUTHORS_CLASSES)})")
    names = tuple(classes) if classes else AUTHORS_CLASSES.get(dataset or "", ())
    if not names:
        raise VadpipeError("convert anomalyclip: give --dataset or --classes (the class names, Normal included)")
    normal = [i for i, c in enumerate(names) if c.lower() == "normal"]
    if len(normal) != 1:
        raise VadpipeError(f"convert anomalyclip: the classes must name Normal once ({', '.join(names)})")
    payload = read_torch_file(ckpt)
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise VadpipeError(f"{ckpt}: no state_dict (is it a Lightning checkpoint?)")
    prototype = read_torch_file(ncentroid)
    if not isinstance(prototype, np.ndarray) or prototype.ndim != 1:
        raise VadpipeError(f"{ncentroid}: expected one 1-D tensor (the normality prototype)")
    prototype = prototype.astype(np.float32)
    directions = class_directions(state, names, normal[0], prototype, model, quick_gelu)
    anomaly_classes = tuple(c for i, c in enumerate(names) if i != normal[0])
    depth = _depth_of(state, "net.temporal_model.axial_attn.layers.blocks.")
    embed = state["net.temporal_model.projection.weight"].shape[0]
    in_dim = state["net.temporal_model.projection.weight"].shape[1]
    concat = in_dim != prototype.shape[0]
    if concat and in_dim != prototype.shape[0] + len(anomaly_classes):
        raise VadpipeError(f"{ckpt}: the temporal model reads {in_dim} inputs, neither {prototype.shape[0]} features "
                           f"nor those and {len(anomaly_classes)} class logits")
    # the preset's training values are a record only; the architecture is the checkpoint's
    head = AnomalyClipHead(preset=dataset, embed_dim=int(embed), depth=depth, concat_selector=concat, geometry="raw",
                           num_segments=32, frames_per_segment=16, device="cpu")
    spec = parse_encoder(encoder)
    head.encoder = spec.key
    head.class_names_ = anomaly_classes
    head.class_texts_ = [c.replace("_", " ") for c in anomaly_classes]
    head.input_recipes_ = {"emb": {"model": spec.model, "pretrained": spec.tag, "dim": embed_dim(spec.model),
                                   "quick_gelu": trained_with_quick_gelu(spec), "normalised": False}}
    bn = "net.selector_model.bn_layer."
    net_state = {"prototype": prototype, "directions": directions,
                 "selector.bn.running_mean": state[bn + "running_mean"].astype(np.float32),
                 "selector.bn.running_var": state[bn + "running_var"].astype(np.float32),
                 "selector.bn.num_batches_tracked": np.asarray(state.get(bn + "num_batches_tracked", 0), np.int64),
                 **{f"temporal.{k}": v for k, v in temporal_state(state, depth, num_selector_columns=(
                     len(anomaly_classes) if concat else 0)).items()}}
    head._load_state(net_state, {"class_texts": head.class_texts_, "converted_from": {
        "checkpoint": str(Path(ckpt).resolve()), "ncentroid": str(Path(ncentroid).resolve()),
        "authors_classes": list(names), "vadpipe_version": __version__}})
    head.fitted_ = True
    return head.save(out_dir)
