"""BLIP-2 answers to questions about every sampled frame, next to the frames' CLIP features.

``caption(manifest, cache, "Salesforce/blip2-opt-2.7b", clip_key)`` takes every video that
is already done under the CLIP encoder ``clip_key``, decodes exactly the frames sampled
there again, asks BLIP-2 (``Blip2ForConditionalGeneration``, a hub id or a local folder
written by ``save_pretrained``) each question about each frame, embeds every answer with
the cache's own CLIP text tower and writes one group per video under the captioner's key::

    /<captioner_key>/                 attrs: kind="captioner", model, questions, prompt_template,
                                             generation, clip_key, dim, sampling, versions
    /<captioner_key>/<video_id>/      attrs: done, fps, num_frames, ... (as featurize)
        frame_index int64[T]          the CLIP group's sampled frames, unchanged
        pts         float64[T]
        text        <U str[T, Q]      normalised answer of each frame to each question
        text_emb    float16[T, Q, D]  L2-normalised CLIP text embedding of each answer

Key scheme: ``<model name>:vqa<Q>-<sha256[:8]>``, e.g. ``blip2-opt-2.7b:vqa4-1f0c2a9e``;
the model name is the last component of the hub id or folder, Q the number of questions,
and the hash covers everything that changes the text (questions, prompt template,
generation settings), so two question sets never share a key. The recipe records the
full model id or resolved folder, and a cache refuses a second, different model under the
same key.

Questions: VLAVAD's three (Li & Jiang 2024, sec. 4.2, their wording) plus :data:`CAPTION`,
the marker for a plain caption (BLIP-2 with no text prompt). A question ``q`` is asked as
``prompt_template.format(q)`` ("Question: {} Answer:", BLIP-2's VQA format). Decoding is
greedy (``num_beams=1``, no sampling) with ``max_new_tokens`` tokens, so a rerun gives the
same text. Answers are normalised by :func:`normalize_answer` (lowercase, whitespace
collapsed, surrounding punctuation stripped). ``text`` is a fixed-width numpy unicode array
(zarr stores it with a warning that this dtype has no v3 specification yet; it reads back
as ``<U``).

Batching: ``batch_size`` frames at a time, each asked every question (F x Q sequences; the
image goes through the vision tower once per question, the price of using the public
``generate``). fp16 on CUDA, fp32 on CPU. Resume and failures work as in featurize: done
videos are skipped, a video that cannot be decoded (or no longer has the sampled frames) is
recorded as failed with its reason, and the others finish. Shards and HDF5 caches behave as
in featurize (``shard``/``num_shards``; an HDF5 shard writes its own file). With snippet-mean
sampling each row stands for a snippet and its recorded frame (the snippet's first) is the
one captioned.

Objects (VLAVAD's setting): with ``clip_key`` an objects group (``ENCODER_KEY+DETECTOR``,
:mod:`vadpipe.objects`), each object row is asked the questions about its own crop -- the same
square, context margin and black padding as its CLIP crop, at source resolution (BLIP-2's
processor resizes it) -- and the group, keyed ``<captioner key>+DETECTOR``, holds one row per
object row (``frame_index`` repeating as in the objects group), with ``unit: "object"`` in its
recipe.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from vadpipe import __version__
from vadpipe.cache import CAPTIONER, OBJECTS, FeatureCache, shard_cache_path
from vadpipe.cache.failures import failures_log_path, record_failure, source_attrs
from vadpipe.data_manifests.schema import Manifest
from vadpipe.errors import VadpipeError, one_line
from vadpipe.featurize.readers import DecodeError, open_source
from vadpipe.featurize.runtime import FeaturizeSummary, prefetch, run_progress, videos_to_do
from vadpipe.texts import check_template, load_text_list, normalize_answer

CAPTION = "<caption>"  # marker: a plain caption, no question
VLAVAD_QUESTIONS = (
    "What is the pose of the person in the picture?",
    "What is the behavior or action of the person in the picture?",
    "What does the person in the picture look like?",
)
DEFAULT_QUESTIONS = VLAVAD_QUESTIONS + (CAPTION,)
PROMPT_TEMPLATE = "Question: {} Answer:"
MAX_NEW_TOKENS = 20


def load_questions(spec) -> list[str]:
    """Questions from a list, a JSON list of strings or a text file (one per line; ``#``
    comments); :data:`CAPTION` asks for a plain caption."""
    return load_text_list(spec, "question")


def captioner_key(name_or_path: str, questions, prompt_template: str = PROMPT_TEMPLATE,
                  max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """``blip2-opt-2.7b:vqa4-<sha256[:8]>`` (see the module docstring)."""
    name = Path(str(name_or_path).rstrip("/\\")).name or "blip2"
    text_recipe = {"questions": list(questions), "prompt_template": prompt_template,
                   "generation": _generation(max_new_tokens)}
    digest = hashlib.sha256(json.dumps(text_recipe, sort_keys=True).encode()).hexdigest()[:8]
    return f"{name}:vqa{len(questions)}-{digest}"


def _generation(max_new_tokens: int) -> dict:
    return {"max_new_tokens": int(max_new_tokens), "num_beams": 1, "do_sample": False}


@dataclass
class Captioner:
    """A loaded BLIP-2 with its questions, ready to answer them about batches of frames."""

    model_id: str  # hub id, or the resolved local folder
    model: object
    processor: object
    device: str
    precision: str
    questions: tuple[str, ...]
    prompt_template: str = PROMPT_TEMPLATE
    max_new_tokens: int = MAX_NEW_TOKENS

    def __post_init__(self):
        prompts = ["" if q == CAPTION else self.prompt_template.format(q) for q in self.questions]
        probe = np.zeros((8, 8, 3), dtype=np.uint8)  # the processor adds BLIP-2's image tokens only with images
        enc = self.processor(images=[probe] * len(prompts), text=prompts, return_tensors="pt", padding=True)
        self._input_ids = enc["input_ids"].to(self.device)  # (Q L)
        self._attention_mask = enc["attention_mask"].to(self.device)  # (Q L)

    @property
    def key(self) -> str:
        return captioner_key(self.model_id, self.questions, self.prompt_template, self.max_new_tokens)

    def recipe(self) -> dict:
        import torch
        import transformers

        return {
            "kind": CAPTIONER,
            "encoder_key": self.key,
            "model": self.model_id,
            "architecture": type(self.model).__name__,
            "questions": list(self.questions),
            "caption_marker": CAPTION,
            "prompt_template": self.prompt_template,
            "generation": _generation(self.max_new_tokens),
            "answer_normalisation": "lowercase, whitespace collapsed, surrounding punctuation stripped",
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
        }

    def answer(self, frames: list[np.ndarray]) -> list[list[str]]:
        """``F`` RGB frames ``uint8[H, W, 3]`` -> ``F`` lists of ``Q`` normalised answers."""
        import torch

        from vadpipe.encoders.device import torch_dtype

        num_q = len(self.questions)
        pixels = self.processor.image_processor(
            frames, return_tensors="pt", input_data_format="channels_last"
        )["pixel_values"]  # (F 3 S S)
        pixels = pixels.to(self.device, torch_dtype(self.precision)).repeat_interleave(num_q, dim=0)  # (F*Q 3 S S), frame-major
        input_ids = self._input_ids.repeat(len(frames), 1)  # (F*Q L)
        with torch.inference_mode():
            out = self.model.generate(
                pixel_values=pixels,
                input_ids=input_ids,
                attention_mask=self._attention_mask.repeat(len(frames), 1),
                pad_token_id=self.processor.tokenizer.pad_token_id,
                **_generation(self.max_new_tokens),
            )  # (F*Q L') with or without the prompt, depending on the transformers version
        prompt_len = input_ids.shape[1]
        if out.shape[1] >= prompt_len and torch.equal(out[:, :prompt_len], input_ids):
            out = out[:, prompt_len:]
        texts = self.processor.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [[normalize_answer(t) for t in texts[f * num_q : (f + 1) * num_q]] for f in range(len(frames))]


def load_captioner(
    name_or_path: str,
    questions=DEFAULT_QUESTIONS,
    device: str = "auto",
    precision: str = "auto",
    prompt_template: str = PROMPT_TEMPLATE,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> Captioner:
    """A BLIP-2 from the hub (``Salesforce/blip2-opt-2.7b``) or a ``save_pretrained`` folder."""
    from vadpipe.encoders.device import check_precision, resolve_device

    device = resolve_device(device)
    precision = check_precision("fp16" if device.startswith("cuda") else "fp32") if precision == "auto" else precision
    check_template(prompt_template, "captioner: ")
    local = Path(name_or_path).expanduser()
    model_id = str(local.resolve()) if local.exists() else str(name_or_path)
    model, processor = _load_blip2(model_id, device, precision)
    questions = tuple(load_questions(list(questions)))
    return Captioner(model_id, model, processor, device, precision, questions, prompt_template, int(max_new_tokens))


@lru_cache(maxsize=2)
def _load_blip2(model_id: str, device: str, precision: str):
    import transformers
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    from vadpipe.encoders.device import torch_dtype

    dtype = torch_dtype(precision)
    # transformers renamed torch_dtype= to dtype= in 4.56
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    dtype_arg = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    try:
        processor = Blip2Processor.from_pretrained(model_id)
        model = Blip2ForConditionalGeneration.from_pretrained(model_id, **{dtype_arg: dtype})
    except (OSError, ValueError) as exc:
        raise VadpipeError(f"could not load captioner {model_id!r}: {one_line(exc, 300)}") from None
    processor.tokenizer.padding_side = "left"  # batched generation with a decoder-only language model
    return model.to(device).eval(), processor


def caption(
    manifest: Manifest,
    cache_path: str | Path,
    captioner: str | Captioner,
    clip_key: str,
    questions=DEFAULT_QUESTIONS,
    batch_size: int = 16,
    device: str = "auto",
    precision: str = "auto",
    max_new_tokens: int = MAX_NEW_TOKENS,
    prompt_template: str = PROMPT_TEMPLATE,
    shard: int = 0,
    num_shards: int = 1,
    failures_log: str | Path | None = None,
    progress: bool = False,
    video_ids: list[str] | None = None,
) -> FeaturizeSummary:
    """Answer ``questions`` about every frame sampled under ``clip_key``; see the module docstring.

    Videos of ``manifest`` not done under ``clip_key`` are left alone (featurize them first,
    or they failed there). ``batch_size`` counts frames; each frame asks every question.
    ``captioner`` is a hub id or local folder, or a loaded :class:`Captioner` (whose questions
    and generation settings then apply instead of the arguments here).
    """
    from vadpipe.encoders import canonical_key, load_clip, spec_from_recipe

    if batch_size < 1:
        raise VadpipeError(f"batch size must be >= 1, got {batch_size}")
    cache_path = shard_cache_path(cache_path, shard, num_shards)
    cache = FeatureCache(cache_path, mode="a")
    try:
        clip_key = canonical_key(clip_key)
        clip_recipe = cache.recipe(clip_key)
        if clip_recipe.get("kind") == CAPTIONER:
            raise VadpipeError(f"{clip_key!r} is a captioner; name the CLIP image encoder whose frames to caption")
        if not isinstance(captioner, Captioner):
            captioner = load_captioner(captioner, questions, device, precision, prompt_template, max_new_tokens)
        clip = load_clip(spec_from_recipe(clip_recipe), device=captioner.device,
                         precision="fp16" if captioner.device.startswith("cuda") else "fp32",
                         quick_gelu=clip_recipe.get("quick_gelu", False))  # the towers of the image features
        key = captioner.key
        objects = clip_recipe.get("kind") == OBJECTS
        unit = {}
        if objects:  # one row per object: the detector's part of the objects key names the group too
            key = f"{key}+{clip_key[len(clip_recipe['clip_key']) + 1:]}"
            unit = {"unit": "object", "crop": clip_recipe["objects"]["crop"]}
        if key in cache.encoders() and cache.recipe(key).get("clip_key") != clip_key:
            raise VadpipeError(
                f"{cache.path}: captioner {key!r} was built on the frames of {cache.recipe(key).get('clip_key')!r}, "
                f"this run asks {clip_key!r}; use another cache"
            )
        cache.ensure_encoder(key, {
            **captioner.recipe(),
            "clip_key": clip_key,
            "text_emb_model": {"model": clip_recipe.get("model"), "pretrained": clip_recipe.get("pretrained")},
            "dim": clip.dim,
            "sampling": clip_recipe.get("sampling"),
            **unit,
            "vadpipe_version": __version__,
        })
        log_path = Path(failures_log) if failures_log else failures_log_path(cache_path)
        summary = FeaturizeSummary(encoder_key=key, failures_log=str(log_path))
        todo = videos_to_do(manifest, cache, key, shard, num_shards, video_ids, summary)
        todo = [e for e in todo if cache.is_done(clip_key, e.video_id)]  # not featurized: left alone
        margin = unit["crop"]["margin"] if objects else None
        _run(todo, cache, clip_key, captioner, clip, batch_size, summary, log_path, progress, margin)
    finally:
        cache.close()
    return summary


def _run(todo, cache, clip_key, captioner, clip, batch_size, summary, log_path, progress, margin=None) -> None:
    with run_progress(summary, len(todo), progress) as bar:
        for entry in todo:
            bar.video(entry.video_id)
            outcome = _caption_one(entry, cache.read(clip_key, entry.video_id), captioner, clip, cache,
                                   summary.encoder_key, batch_size, bar.frames, margin)
            if isinstance(outcome, tuple):  # (stage, reason)
                record_failure(cache, summary.encoder_key, entry, *outcome, summary, log_path, bar)
            else:
                summary.done.append(entry.video_id)
                summary.frames += outcome["samples"]
                summary.infer_seconds += outcome["infer_seconds"]
            bar.advance()


def _caption_one(entry, clip_features, captioner: Captioner, clip, cache, key, batch_size, on_frames,
                 margin: float | None = None):
    """Caption one video and write its group; returns counts, or ``(stage, reason)`` on failure.
    ``margin``: ``clip_features`` is an objects group, whose rows' crops are captioned."""
    import torch

    from vadpipe.objects.crops import square_crops

    wanted = clip_features.frame_index  # with objects: a frame repeats once per object on it
    wanted_set = set(int(i) for i in wanted)
    boxes = clip_features.arrays.get("box") if margin is not None else None
    try:
        source = open_source(entry.path, fps_hint=entry.fps)
    except DecodeError as exc:
        return "open", str(exc)
    frames = prefetch(source.iter_frames(lambda i, _pts: i in wanted_set), maxsize=2 * batch_size)
    found, answers = [], []
    t_infer = 0.0
    try:
        batch_idx, batch_rgb = [], []
        for i, _pts, rgb in frames:
            if boxes is None:
                images = [rgb]
            else:
                rows = np.flatnonzero(wanted == i)
                images = square_crops(rgb, boxes[rows], margin)
            for image in images:
                batch_idx.append(i)
                batch_rgb.append(image)
                if len(batch_rgb) < batch_size:
                    continue
                t_infer += _answer(captioner, batch_rgb, answers)
                found += batch_idx
                on_frames(len(batch_idx))
                batch_idx, batch_rgb = [], []
        if batch_rgb:
            t_infer += _answer(captioner, batch_rgb, answers)
            found += batch_idx
            on_frames(len(batch_idx))
    except DecodeError as exc:
        return "decode", str(exc)
    except torch.cuda.OutOfMemoryError:
        return "caption", "out of GPU memory (lower --batch-size)"
    if not np.array_equal(np.asarray(found, dtype=np.int64), wanted):
        what = "object rows" if boxes is not None else "sampled frames"
        return "decode", f"source changed since featurize: found {len(found)} of its {len(wanted)} {what}"
    num_q = len(captioner.questions)
    text = np.array(answers, dtype=str).reshape(len(found), num_q)  # (T Q)
    unique, inverse = np.unique(text, return_inverse=True)
    text_emb = (clip.encode_text(unique.tolist()).astype(np.float16)[inverse.reshape(-1)] if len(unique)
                else np.zeros((0, clip.dim), np.float16))  # (T*Q D); a video without objects has no rows
    attrs = {
        **source_attrs(entry),
        **{k: clip_features.attrs.get(k) for k in ("fps", "num_frames", "width", "height")},
        "num_samples": len(found),
        "precision": captioner.precision,
    }
    cache.write_video(
        key, entry.video_id, clip_features.frame_index, clip_features.pts, attrs=attrs,
        arrays={"text": text, "text_emb": text_emb.reshape(len(found), num_q, clip.dim)},
    )
    return {"samples": len(found), "infer_seconds": t_infer}


def _answer(captioner: Captioner, frames, answers: list) -> float:
    t = time.perf_counter()
    answers += captioner.answer(frames)
    return time.perf_counter() - t
