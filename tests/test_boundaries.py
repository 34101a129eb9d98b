"""The house reads top-down: what each part may import, checked in fresh interpreters.

manifest -> featurize -> cache -> heads -> scores -> evaluate, with shared leaves below
(errors, encoders, texts) and the app layer above (cli, runs, distribute, cache tools, demo).
Stage 2 never reaches back into stage 1; listing heads, ``--help`` and ``cache import`` need
no torch. (``evaluate`` never importing torch is in test_evaluate_reports.py.)
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import vadpipe.heads

REPO = Path(__file__).resolve().parents[1]


def loaded_after(code: str) -> set[str]:
    """The modules ``sys.modules`` holds after running ``code`` in a fresh interpreter."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_no_head_module_imports_stage_one_or_pyav():
    modules = [m.name for m in pkgutil.walk_packages(vadpipe.heads.__path__, "vadpipe.heads.")]
    assert {"vadpipe.heads.s3m", "vadpipe.heads.anomalyclip.head", "vadpipe.heads.clipassist.frame"} <= set(modules)
    loaded = loaded_after("\n".join(f"import {m}" for m in modules))
    assert "torch" in loaded  # the heads did load (their networks are torch modules)
    assert not {m for m in loaded if m == "vadpipe.featurize" or m.startswith("vadpipe.featurize.")}
    assert "av" not in loaded and "vadpipe.cli" not in loaded


def test_listing_heads_and_help_need_no_torch():
    for argv in (["heads"], ["--help"], ["cache", "--help"], ["train", "--help"]):
        code = ("import sys\nfrom typer.testing import CliRunner\nfrom vadpipe.cli import app\n"
                f"result = CliRunner().invoke(app, {argv!r})\nassert result.exit_code == 0, result.output\n"
                "print(result.output, file=sys.stderr)")
        loaded = loaded_after(code)
        assert "torch" not in loaded and "open_clip" not in loaded, argv
        assert not {m for m in loaded if m.startswith("vadpipe.heads.") and m not in
                    ("vadpipe.heads.base", "vadpipe.heads.data", "vadpipe.heads.registry")}, argv


def test_cache_import_reads_the_dimension_without_torch(tmp_path):
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "v.npy", np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32))
    (tmp_path / "m.csv").write_text("video_id,path,split,label\nv,v.mp4,test,normal\n")
    code = ("from vadpipe.cache.tools import import_npy\nfrom vadpipe.data_manifests import load_manifest\n"
            f"s = import_npy({str(tmp_path / 'npy')!r}, {str(tmp_path / 'c.zarr')!r}, 'ViT-B-16:openai', "
            f"load_manifest({str(tmp_path / 'm.csv')!r}))\nassert s.failed and 'dim 64 != 512' in s.failed[0]['reason']")
    loaded = loaded_after(code)
    assert "torch" not in loaded and "open_clip" not in loaded


# the parts of the house, bottom up: a module imports only its own part and the parts above
# it in this list (the README's layout table); the app layer may import anything
LAYERS = [
    ("leaves", ["vadpipe/__init__.py", "vadpipe/errors.py", "vadpipe/texts.py", "vadpipe/vectors.py",
                "vadpipe/_faults.py", "vadpipe/params.py", "vadpipe/memory.py"]),
    ("encoders", ["vadpipe/encoders/"]),
    ("data_manifests", ["vadpipe/data_manifests/"]),
    ("cache", ["vadpipe/cache/"]),
    ("scores", ["vadpipe/scores.py"]),
    ("objects", ["vadpipe/objects/"]),
    ("featurize", ["vadpipe/featurize/"]),
    ("heads", ["vadpipe/heads/"]),
    ("evaluate", ["vadpipe/evaluate/"]),
    ("app", ["vadpipe/cache/tools.py", "vadpipe/runs.py", "vadpipe/distribute/", "vadpipe/cli/", "vadpipe/demo.py",
             "vadpipe/synth.py", "vadpipe/models/", "vadpipe/recipes/"]),
]


def layer_of(path: str) -> int:
    """The index in LAYERS of a file or module path (the most specific entry wins)."""
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (path == prefix or (prefix.endswith("/") and path.startswith(prefix))) and len(prefix) > depth:
                best, depth = i, len(prefix)
    assert best is not None, f"{path} is in no layer of LAYERS"
    return best


def test_every_module_imports_only_its_own_layer_and_those_below():
    import ast

    def module_file(name: str) -> str:
        rel = name.replace(".", "/")
        return f"{rel}.py" if (REPO / f"{rel}.py").exists() else f"{rel}/__init__.py"

    problems = []
    for file in sorted((REPO / "vadpipe").rglob("*.py")):
        rel = str(file.relative_to(REPO))
        mine = layer_of(rel)
        if LAYERS[mine][0] == "app":
            continue
        for node in ast.walk(ast.parse(file.read_text())):  # top-level and lazy imports alike
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                if name.split(".")[0] == "vadpipe" and name != "vadpipe":
                    theirs = layer_of(module_file(name))
                    if theirs > mine:
                        problems.append(f"{rel} ({LAYERS[mine][0]}) imports {name} ({LAYERS[theirs][0]})")
    assert not problems, "\n".join(problems)


def test_vadpipe_models_is_kept_for_one_release():
    code = ("import warnings, importlib.util\nwarnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import vadpipe.models\nexcept DeprecationWarning:\n    pass\nelse:\n    raise SystemExit('no warning')\n"
            "warnings.simplefilter('ignore')\nimport vadpipe.models\n"
            "from vadpipe.models import get_head, load_head, list_heads\n"
            "from vadpipe.models.base import Head, Scores, register_head\n"  # what a 0.2 head imported
            "import vadpipe.models.zeroshot as old, vadpipe.heads.zeroshot as new\nassert old is new\n"
            "from vadpipe.models.anomalyclip import AnomalyClipNet\nfrom vadpipe.models import anomalyclip_losses\n"
            "from vadpipe.models.runs import score_run\n"
            "assert importlib.util.find_spec('vadpipe.heads.zeroshot').name == 'vadpipe.heads.zeroshot'\n"
            "assert get_head('prototype').name == 'prototype'")
    loaded_after(code)
