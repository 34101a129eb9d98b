"""``train_head`` as one job (Slurm through submitit, or here)."""

from __future__ import annotations

from pathlib import Path

from vadpipe.distribute.executors import ExecutorOptions, Task, default_folder, make_executor


def _train(head: str, cache_path: str, manifest_path: str, out_dir: str, encoder: str | None, params: dict,
           device: str) -> dict:
    from vadpipe.data_manifests import load_manifest
    from vadpipe.runs import train_head

    model = train_head(head, cache_path, load_manifest(manifest_path), out_dir, encoder=encoder, params=params,
                       device=device)
    return {"head": repr(model), "encoder": model.encoder, "output": out_dir}


def submit_training(head: str, cache_path: str | Path, manifest_path: str | Path, out_dir: str | Path,
                    encoder: str | None, params: dict, options: ExecutorOptions, device: str = "auto"):
    """``train_head`` as one job; returns its handle (``wait_for([handle])`` to follow it)."""
    out_dir = Path(out_dir).resolve()
    folder = Path(options.slurm.folder or default_folder(out_dir)).resolve()
    executor = make_executor(options, folder, f"vadpipe-train-{head}")
    task = Task(f"train {head}", _train, (head, str(Path(cache_path).resolve()),
                                          str(Path(manifest_path).resolve()), str(out_dir), encoder, params, device))
    return executor.submit([task])[0]
