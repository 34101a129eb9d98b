"""Recipes: one shipped file per paper table row, run from video to number as one command.

A recipe (``vadpipe/recipes/<name>.json``) records everything between a dataset and a
published number: the paper, table and row, the number and its metric, the dataset builder
and its options, featurize options (encoder, sampling, crop), captioner options, the head
and its parameters, scoring options (text redefinition), evaluation options (convention,
smoothing) and the known differences from the paper. ``vadpipe recipes run NAME`` executes
manifest -> featurize -> (captions) -> train -> score -> evaluate into one work folder and
ends with one line: the paper's number, the number obtained, the metric.

Schema (``"captioner"`` and ``"score"`` optional)::

    {
      "paper": "Zanella et al., Delving into CLIP latent space for VAD, CVIU 2024",
      "cite": "Zanella 2024",
      "table": "Table 1", "row": "AnomalyCLIP (ours), UCF-Crime",
      "published": [{"metric": "micro_auc", "value": 0.8636}, {"metric": "mauc", "value": 0.9066}],
      "dataset": {"builder": "ucf_crime", "options": {"end": "inclusive"}},   (+ "test": {builder, options}:
                                                                          train here, test there)
      "featurize": {"encoder": "ViT-B-16:openai", "sampling": {"stride": 1}, "crop": "center",
                    "splits": ["train", "test"],
                    "objects": {"detector": "fasterrcnn_resnet50_fpn_v2", "params": {"classes": ["person"]}}},
      "captioner": {"model": "Salesforce/blip2-opt-2.7b", "questions": ["..."]},
      "head": {"name": "anomalyclip", "params": {"preset": "ucf_crime"}},
      "score": {"normal": [], "anomaly": [], "threshold": 0.2, "strength": 0.5},
      "evaluate": {"convention": "anomalyclip", "sigma": 0},
      "differences": ["what vadpipe does differently, and which way it should move the number"]
    }

``published`` metrics are report keys: ``micro_auc``, ``macro_auc``, ``ap``, ``mauc``,
``map`` and ``subset_mauc`` (Ueki's per-class AUC; a ``per_class`` object gives each class's
number). Values are fractions (86.36% is 0.8636).

Running is resumable: the manifest is rebuilt (cheap), featurize and captions skip the
videos already done, a trained run folder whose recorded settings match is kept, scoring and
evaluation run again. The work folder remembers the effective recipe (``recipe.json``); a
rerun with other settings into the same folder is refused. ``encoder`` (tests use
``vadpipe-tiny``), ``captioner``, ``objects`` (a detector: ``motion``, ``file:DIR``, another
torchvision model; the recipe's shared object settings -- ``min_area``, ``max_objects``,
``margin``, tracker -- are kept, its detector's own are dropped) and head ``params`` override the
recipe; the final line says so. ``manifest`` replaces the builder with a manifest of one's own (a stand-in, or one's own
data).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from vadpipe.encoders.preprocessing import CROPS
from vadpipe.errors import VadpipeError, read_json

RECIPES_DIR = Path(__file__).resolve().parent
METRICS = ("micro_auc", "macro_auc", "ap", "mauc", "map", "subset_mauc")
_KEYS = ("paper", "cite", "table", "row", "published", "dataset", "featurize", "captioner", "head", "score", "evaluate",
         "differences", "notes")


@dataclass(frozen=True)
class Recipe:
    name: str
    path: str
    paper: str
    cite: str
    table: str
    row: str
    published: tuple[dict, ...]
    dataset: dict
    featurize: dict
    head: dict
    evaluate: dict = field(default_factory=dict)
    captioner: dict | None = None
    score: dict = field(default_factory=dict)
    differences: tuple[str, ...] = ()
    notes: str = ""

    @property
    def sampling_args(self) -> dict:
        """The featurize sampling as :meth:`vadpipe.featurize.Sampling.parse` keywords."""
        return dict(self.featurize.get("sampling", {}))

    def summary(self) -> str:
        numbers = ", ".join(f"{m['metric']} {m['value']:.4f}" for m in self.published)
        return f"{self.name}  {self.cite} {self.table}, {self.row}: {numbers}"


def list_recipes() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name, or a recipe file; checked (:func:`validate`)."""
    path = Path(name_or_path)
    if not path.suffix == ".json" or not path.exists():
        path = RECIPES_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise VadpipeError(f"unknown recipe {str(name_or_path)!r} (shipped: {', '.join(list_recipes())})")
    data = read_json(path)
    if not isinstance(data, dict):
        raise VadpipeError(f"{path}: a recipe must be a JSON object")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise VadpipeError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(_KEYS)})")
    missing = [k for k in ("paper", "table", "row", "published", "dataset", "featurize", "head") if k not in data]
    if missing:
        raise VadpipeError(f"{path}: missing {', '.join(missing)}")
    recipe = Recipe(
        name=path.stem, path=str(path), paper=data["paper"], cite=data.get("cite", data["paper"].split(",")[0]),
        table=data["table"], row=data["row"],
        published=tuple(data["published"]), dataset=data["dataset"], featurize=data["featurize"], head=data["head"],
        evaluate=data.get("evaluate", {}), captioner=data.get("captioner"), score=data.get("score", {}),
        differences=tuple(data.get("differences", ())), notes=data.get("notes", ""),
    )
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    """Every part names something vadpipe has: the builder and its options, the sampling, the
    crop, the head and each of its parameters, the convention; published metrics are known."""
    import inspect

    from vadpipe.data_manifests.benchmarks import BUILDERS
    from vadpipe.evaluate.run import EvalConfig
    from vadpipe.featurize.sampling import Sampling
    from vadpipe.heads import get_head

    from vadpipe.encoders.spec import parse_encoder
    from vadpipe.heads.registry import get_head_class
    from vadpipe.texts import check_template

    where = recipe.path
    if not recipe.published:
        raise VadpipeError(f"{where}: 'published' lists no number")
    for item in recipe.published:
        if not isinstance(item, dict) or item.get("metric") not in METRICS or not _number(item.get("value")) \
                or not 0 < item["value"] <= 1:
            raise VadpipeError(f"{where}: a published entry needs a metric ({', '.join(METRICS)}) and a value in "
                               f"(0, 1] (86.36% is 0.8636): {item!r}")
        per_class = item.get("per_class")
        if per_class is not None:
            known = _dataset_classes(recipe.dataset.get("builder"))
            if not isinstance(per_class, dict) or not all(_number(v) and 0 < v <= 1 for v in per_class.values()):
                raise VadpipeError(f"{where}: per_class maps class names to values in (0, 1]")
            unknown = sorted(set(per_class) - set(known)) if known else []
            if unknown:
                raise VadpipeError(f"{where}: per_class names {', '.join(unknown)}, not classes of "
                                   f"{recipe.dataset.get('builder')} ({', '.join(known)})")
    for dataset in (recipe.dataset, recipe.dataset.get("test")):
        if dataset is None:
            continue
        builder = dataset.get("builder")
        if builder not in BUILDERS:
            raise VadpipeError(f"{where}: unknown dataset builder {builder!r} (known: {', '.join(BUILDERS)})")
        accepted = set(inspect.signature(BUILDERS[builder]).parameters) - {"annotations", "videos"}
        unknown = sorted(set(dataset.get("options", {})) - accepted)
        if unknown:
            raise VadpipeError(f"{where}: {builder} has no option(s) {', '.join(unknown)} "
                               f"(accepted: {', '.join(sorted(accepted))})")
    head_class = get_head_class(recipe.head.get("name", "?"))
    if recipe.captioner is not None:
        cap = recipe.captioner
        unknown = sorted(set(cap) - {"model", "questions", "prompt_template", "max_new_tokens"})
        if unknown or not isinstance(cap.get("model"), str):
            raise VadpipeError(f"{where}: captioner needs a model; unknown option(s): {', '.join(unknown) or 'none'}")
        questions = cap.get("questions", [])
        if not isinstance(questions, list) or not all(isinstance(x, str) and x.strip() for x in questions):
            raise VadpipeError(f"{where}: captioner questions must be a list of non-empty strings")
        if "prompt_template" in cap:
            check_template(cap["prompt_template"], where=f"{where}: captioner ")
        if "max_new_tokens" in cap and not (isinstance(cap["max_new_tokens"], int) and cap["max_new_tokens"] > 0):
            raise VadpipeError(f"{where}: captioner max_new_tokens must be a positive integer")
        if "captions" not in head_class.inputs:
            raise VadpipeError(f"{where}: head {head_class.name!r} reads no captions; drop the captioner")
    if not isinstance(recipe.featurize.get("encoder"), str):
        raise VadpipeError(f"{where}: featurize needs an encoder")
    parse_encoder(recipe.featurize["encoder"])
    Sampling.parse(**recipe.sampling_args)
    if recipe.featurize.get("crop", "center") not in CROPS:
        raise VadpipeError(f"{where}: crop {recipe.featurize['crop']!r}: vadpipe crops {', '.join(CROPS)}")
    unknown = sorted(set(recipe.featurize) - {"encoder", "sampling", "crop", "splits", "objects"})
    if unknown:
        raise VadpipeError(f"{where}: unknown featurize option(s) {', '.join(unknown)}")
    objects = recipe.featurize.get("objects")
    if objects is not None:
        from vadpipe.objects import ObjectsConfig

        if not isinstance(objects, dict) or not isinstance(objects.get("detector"), str) or \
                set(objects) - {"detector", "params"} or not isinstance(objects.get("params", {}), dict):
            raise VadpipeError(f"{where}: featurize objects is {{\"detector\": NAME, \"params\": {{...}}}}")
        ObjectsConfig.parse(objects["detector"], objects.get("params", {}))

    bad = sorted(set(recipe.featurize.get("splits", ())) - {"train", "test"})
    if bad:
        raise VadpipeError(f"{where}: featurize splits must be train and/or test, got {', '.join(bad)}")
    if not isinstance(recipe.head.get("params", {}), dict):
        raise VadpipeError(f"{where}: head params must be an object")
    get_head(recipe.head.get("name", "?"), **recipe.head.get("params", {}))
    if objects is not None and recipe.head.get("params", {}).get("unit") != "object":
        raise VadpipeError(f"{where}: featurize makes objects but the head scores frames: add unit=object")
    try:
        EvalConfig(**recipe.evaluate)
    except TypeError as exc:
        raise VadpipeError(f"{where}: bad evaluate option ({exc})") from None
    unknown = sorted(set(recipe.score) - {"normal", "anomaly", "threshold", "strength"})
    if unknown:
        raise VadpipeError(f"{where}: unknown score option(s) {', '.join(unknown)}")
    for kind in ("normal", "anomaly"):
        phrases = recipe.score.get(kind, [])
        if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip() for p in phrases):
            raise VadpipeError(f"{where}: score {kind} must be a list of phrases")
    for key in ("threshold", "strength"):
        if key in recipe.score and not _number(recipe.score[key]):
            raise VadpipeError(f"{where}: score {key} must be a number")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dataset_classes(builder: str | None) -> list[str]:
    """The anomaly classes a benchmark's builder names without reading files (UCF-Crime, XD-Violence)."""
    if builder == "ucf_crime":
        from vadpipe.data_manifests.ucf_crime import CLASSES

        return [c for c in CLASSES if c.lower() != "normal"]
    if builder == "xd_violence":
        from vadpipe.data_manifests.xd_violence import CLASS_CODES

        return [c for c in CLASS_CODES.values() if c.lower() != "normal"]
    return []


# ---------------------------------------------------------------- running
@dataclass
class RecipeResult:
    recipe: str
    obtained: dict[str, float]
    published: dict[str, float]
    overrides: dict
    report: str

    def line(self) -> str:
        parts = [f"{m} paper {self.published[m]:.4f}, obtained {self.obtained.get(m, float('nan')):.4f}"
                 for m in self.published]
        changed = f" [overridden: {', '.join(f'{k}={v}' for k, v in self.overrides.items())}]" if self.overrides else ""
        return f"{self.recipe}: " + "; ".join(parts) + changed


def effective(recipe: Recipe, encoder: str | None = None, captioner: str | None = None,
              params: dict | None = None, objects: str | None = None) -> dict:
    """The settings a run uses: the recipe's, with the overrides."""
    featurize = {**recipe.featurize, **({"encoder": encoder} if encoder else {})}
    if objects and objects != featurize.get("objects", {}).get("detector"):
        from vadpipe.objects.config import COMMON, TRACKER_PARAMS

        shared = {k: v for k, v in featurize.get("objects", {}).get("params", {}).items()
                  if k in COMMON or k in TRACKER_PARAMS}
        featurize["objects"] = {"detector": objects, "params": shared}
    cap = None if recipe.captioner is None else {**recipe.captioner, **({"model": captioner} if captioner else {})}
    head = {"name": recipe.head["name"], "params": {**recipe.head.get("params", {}), **(params or {})}}
    return {"recipe": recipe.name, "dataset": recipe.dataset, "featurize": featurize, "captioner": cap, "head": head,
            "score": recipe.score, "evaluate": recipe.evaluate}


def commands(recipe: Recipe, work: str | Path, videos=None, annotations=None, manifest=None, encoder=None,
             captioner=None, params=None, test_videos=None, test_annotations=None, objects=None) -> list[str]:
    """The vadpipe commands :func:`run` executes, as a shell would type them (``--dry-run``)."""
    settings = effective(recipe, encoder, captioner, params, objects)
    work = Path(work)
    q = shlex.quote
    out = []

    def build(dataset, annotations, videos, path):
        opts = " ".join(f"--{k.replace('_', '-')} {q(str(v))}" for k, v in dataset.get("options", {}).items())
        return (f"vadpipe manifest {dataset['builder']} --annotations {q(str(annotations))} --videos {q(str(videos))} "
                f"{opts} -o {q(str(path))}").replace("  ", " ")

    if manifest is None:
        test = recipe.dataset.get("test")
        if test is None:
            out.append(build(recipe.dataset, annotations or "ANNOTATIONS", videos or "VIDEOS", work / "manifest.csv"))
        else:
            out.append(build(recipe.dataset, annotations or "ANNOTATIONS", videos or "VIDEOS", work / "train-manifest.csv"))
            out.append(build(test, test_annotations or "TEST_ANNOTATIONS", test_videos or "TEST_VIDEOS",
                             work / "test-manifest.csv"))
            out.append(f"vadpipe manifest cross --train {q(str(work / 'train-manifest.csv'))} "
                       f"--test {q(str(work / 'test-manifest.csv'))} -o {q(str(work / 'manifest.csv'))}")
        manifest = work / "manifest.csv"
    m, cache = q(str(manifest)), q(str(work / "features.zarr"))
    sampling = " ".join(_sampling_flags(recipe.sampling_args))
    feat = f"vadpipe featurize {m} --cache {cache} --encoder {q(settings['featurize']['encoder'])} {sampling}"
    splits = recipe.featurize.get("splits")
    if splits and set(splits) != {"train", "test"}:
        feat += "".join(f" --split {s}" for s in splits)
    if recipe.featurize.get("crop", "center") != "center":
        feat += f" --crop {recipe.featurize['crop']}"
    if settings["featurize"].get("objects"):
        obj = settings["featurize"]["objects"]
        feat += f" --objects {q(obj['detector'])}" + "".join(
            f" --objects-param {q(k + '=' + _param_text(v))}" for k, v in obj.get("params", {}).items())
    if settings["captioner"]:
        cap = settings["captioner"]
        feat += f" --captioner {q(cap['model'])}"
        if cap.get("questions"):
            out.append(f"printf '%s\\n' {' '.join(q(x) for x in cap['questions'])} > {q(str(work / 'questions.txt'))}")
            feat += f" --questions {q(str(work / 'questions.txt'))}"
    out.append(feat.strip())
    param_flags = " ".join(f"--param {q(k + '=' + _param_text(v))}" for k, v in settings["head"]["params"].items())
    out.append(f"vadpipe train {settings['head']['name']} --cache {cache} --manifest {m} -o {q(str(work / 'run'))} "
               f"{param_flags}".strip())
    score = f"vadpipe score {q(str(work / 'run'))} --cache {cache} --manifest {m} -o {q(str(work / 'scores.zarr'))}"
    for phrase in recipe.score.get("normal", []):
        score += f" --normal {q(phrase)}"
    for phrase in recipe.score.get("anomaly", []):
        score += f" --anomaly {q(phrase)}"
    if recipe.score.get("normal") or recipe.score.get("anomaly"):
        for key in ("threshold", "strength"):
            if key in recipe.score:
                score += f" --redefine-{key} {recipe.score[key]}"
    out.append(score)
    ev = f"vadpipe evaluate {q(str(work / 'scores.zarr'))} --manifest {m} -o {q(str(work / 'report'))}"
    for key, value in recipe.evaluate.items():
        ev += f" --{key.replace('_', '-')} {q(str(value))}"
    out.append(ev)
    return out


def _complete_run(run_dir: Path) -> bool:
    """A run folder that loads (a run killed while saving is trained again)."""
    from vadpipe.heads import load_head

    if not (run_dir / "config.json").exists():
        return False
    try:
        load_head(run_dir, device="cpu")
    except Exception:  # noqa: BLE001 - anything unreadable is retrained
        return False
    return True


def _param_text(value) -> str:
    """A ``--param`` value as typed: a plain string bare (``preset=ucf_crime``), the rest JSON."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.dumps(value)


def _sampling_flags(sampling: dict) -> list[str]:
    flags = []
    for key, value in sampling.items():
        if key == "snippet_mean":
            flags += ["--snippet-mean"] if value else []
        else:
            flags += [f"--{key}", str(value)]
    return flags


def run(recipe: Recipe, work: str | Path, videos=None, annotations=None, manifest=None, encoder: str | None = None,
        captioner: str | None = None, params: dict | None = None, device: str = "auto",
        progress: bool = False, plots: bool = True, log=print, test_videos=None, test_annotations=None,
        objects: str | None = None) -> RecipeResult:
    """Execute the recipe into ``work`` (module docstring); ``log`` receives one line per stage
    (and, for a per-class row, one line per class)."""
    from vadpipe.data_manifests import load_manifest
    from vadpipe.data_manifests.benchmarks import build_benchmark_manifest, cross_dataset_manifest
    from vadpipe.errors import output_dir
    from vadpipe.evaluate.run import EvalConfig, evaluate
    from vadpipe.featurize import FeaturizeConfig, Sampling
    from vadpipe.featurize import featurize as run_featurize
    from vadpipe.runs import score_run, train_head

    work = output_dir(work)
    settings = effective(recipe, encoder, captioner, params, objects)
    if manifest is None:
        if videos is None or annotations is None:
            raise VadpipeError(f"recipe {recipe.name}: give --videos and --annotations (or --manifest)")
        built = build_benchmark_manifest(recipe.dataset["builder"], annotations, videos,
                                         **recipe.dataset.get("options", {}))
        test = recipe.dataset.get("test")
        if test is not None:  # cross-dataset: train on this dataset, test on another
            if test_videos is None or test_annotations is None:
                raise VadpipeError(f"recipe {recipe.name}: tests on {test['builder']}: give --test-videos and "
                                   "--test-annotations")
            built = cross_dataset_manifest(built, build_benchmark_manifest(test["builder"], test_annotations, test_videos,
                                                                  **test.get("options", {})))
        manifest_path = work / "manifest.csv"
        built.save(manifest_path)
    else:
        manifest_path = Path(manifest)
    # the work folder holds one run: these settings on this manifest (its videos, splits, labels)
    settings["manifest_sha256"] = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    record = work / "recipe.json"
    if record.exists():
        before = json.loads(record.read_text())
        if before != json.loads(json.dumps(settings)):
            raise VadpipeError(f"{work}: made by another recipe, other settings or another manifest ({record}); "
                               "use another -o folder")
    else:
        record.write_text(json.dumps(settings, indent=2) + "\n")
    videos_m = load_manifest(manifest_path)
    log(f"manifest: {manifest_path} ({len(videos_m.select(split='train'))} train, {len(videos_m.select(split='test'))} test)")

    cache = work / "features.zarr"
    obj = settings["featurize"].get("objects")
    if obj:
        from vadpipe.objects import ObjectsConfig

        obj = ObjectsConfig.parse(obj["detector"], obj.get("params", {}))
    crop = recipe.featurize.get("crop", "center")
    config = FeaturizeConfig(encoder=settings["featurize"]["encoder"], sampling=Sampling.parse(**recipe.sampling_args),
                             device=device, crop=None if crop == "center" else crop, objects=obj or None)
    splits = recipe.featurize.get("splits")
    ids = [e.video_id for e in videos_m if splits is None or e.split in splits]
    summary = run_featurize(videos_m, cache, config, progress=progress, video_ids=ids)
    log(f"featurize: {summary.encoder_key} -> {cache}: {summary.line()}")
    if summary.failed:
        raise VadpipeError(f"recipe {recipe.name}: {len(summary.failed)} video(s) failed to featurize "
                           f"(see {summary.failures_log}); fix or drop them from the manifest and run again")
    if settings["captioner"]:
        from vadpipe.featurize.captioner import DEFAULT_QUESTIONS, caption

        cap = settings["captioner"]
        options = {k: cap[k] for k in ("prompt_template", "max_new_tokens") if k in cap}
        questions = cap.get("questions") or list(DEFAULT_QUESTIONS)
        (work / "questions.txt").write_text("".join(f"{x}\n" for x in questions))  # as --dry-run writes it
        clip_key = obj.key(summary.encoder_key) if obj else summary.encoder_key  # objects: about each object
        caps = caption(videos_m, cache, cap["model"], clip_key, questions=questions, device=device,
                       progress=progress, video_ids=ids, **options)
        log(f"captions: {caps.encoder_key} -> {cache}: {caps.line()}")
        if caps.failed:
            raise VadpipeError(f"recipe {recipe.name}: {len(caps.failed)} video(s) failed to caption")

    run_dir = work / "run"
    if _complete_run(run_dir):
        log(f"train: {run_dir} exists (same recipe.json): kept")
    else:
        head = train_head(settings["head"]["name"], cache, videos_m, run_dir, encoder=summary.encoder_key,
                          params=settings["head"]["params"], device=device)
        log(f"train: {head!r} -> {run_dir}")
    phrases = recipe.score
    scored = score_run(run_dir, cache, videos_m, work / "scores.zarr", normal=phrases.get("normal", ()),
                       anomaly=phrases.get("anomaly", ()), device=device,
                       **({"redefine_threshold": phrases["threshold"]} if "threshold" in phrases else {}),
                       **({"redefine_strength": phrases["strength"]} if "strength" in phrases else {}))
    log(f"score: {scored.line()}")
    report = evaluate(scored.path, videos_m, work / "report", EvalConfig(**{"plots": plots, **recipe.evaluate}))
    log(f"evaluate: {work / 'report' / 'report.md'}")
    obtained = {}
    for item in recipe.published:
        metric = item["metric"]
        value = report.get(metric)
        if value is None and report.get("recognition"):
            value = report["recognition"].get(metric)
        obtained[metric] = float("nan") if value is None else float(value)
        if item.get("per_class"):  # a per-class row: each class's number, then the mean on the last line
            mine = {c["class"]: c.get("subset_auc" if metric == "subset_mauc" else "auc")
                    for c in (report.get("recognition") or {}).get("classes", [])}
            for name, paper in item["per_class"].items():
                got = mine.get(name)
                log(f"  {name}: paper {paper:.4f}, obtained {'n/a' if got is None else f'{got:.4f}'}")
    overrides = {k: v for k, v in (("encoder", encoder), ("captioner", captioner), ("objects", objects)) if v}
    overrides.update(params or {})
    result = RecipeResult(recipe.name, obtained, {m["metric"]: m["value"] for m in recipe.published}, overrides,
                          str(work / "report"))
    (work / "result.json").write_text(json.dumps({"line": result.line(), "obtained": obtained,
                                                  "published": result.published, "overrides": overrides}, indent=2) + "\n")
    return result


__all__ = ["Recipe", "RecipeResult", "commands", "list_recipes", "load_recipe", "run", "validate"]
