"""Throwaway model repositories for `mlserver start .`: the project's settings.json (overridable),
runtime/ linked in, and model directories copied or linked from models/.

    root = make_repository(tmp / "repo", workers=1)
    add_model(root, "capped", extra={"max_in_flight": 2})       # a copy of diabetes/1 named capped
    link_model(root, "breast-cancer/1")                          # as shipped
    server = Server.start(root / "server.log", root=root, models=[("capped", None)])
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from harness.models import MODELS_DIR, REPO_ROOT

RUNTIME = "runtime.PipelineRuntime"
# Keys of settings.json that pin where a server listens: the harness sets ports by environment.
_ADDRESS_KEYS = ("host", "http_port", "grpc_port", "metrics_port")


def project_settings(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The settings.json of the project (or of another checkout of it, `root`) minus anything that
    pins addresses or ports."""
    settings: dict[str, Any] = json.loads((root / "settings.json").read_text())
    for key in _ADDRESS_KEYS:
        settings.pop(key, None)
    return settings


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def make_repository(
    root: Path,
    *,
    workers: int | None = 0,
    settings: dict[str, Any] | None = None,
    logging_config: dict[str, Any] | None = None,
    link_runtime: bool = True,
    base: dict[str, Any] | None = None,
) -> Path:
    """An empty model repository: settings.json is `base` (default: the project's) with
    `parallel_workers` set (None: MLServer's default) and `settings` merged in; `logging_config`
    becomes its own logging.json. runtime/ is linked in so `runtime.*` imports and the shipped
    logging.json resolve as in the project."""
    root.mkdir(parents=True, exist_ok=True)
    merged = dict(project_settings() if base is None else base)
    merged.pop("parallel_workers", None)
    if workers is not None:
        merged["parallel_workers"] = workers
    merged.update(settings or {})
    if logging_config is not None:
        _write_json(root / "logging.json", logging_config)
        merged["logging_settings"] = "./logging.json"
    if link_runtime:
        (root / "runtime").symlink_to(REPO_ROOT / "runtime", target_is_directory=True)
    _write_json(root / "settings.json", merged)
    return root


def add_model(
    root: Path,
    name: str,
    *,
    source: str = "diabetes/1",
    implementation: str = RUNTIME,
    extra: dict[str, Any] | None = None,
    version: str = "1",
    subdir: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """Copy a shipped model version (models/<source>) to models/<subdir or name> with a
    model-settings.json of its own: `name`, `implementation`, `version`, `parameters.extra`, plus
    `settings` merged at the top level (e.g. max_batch_size). Copied, not linked: the runtime
    refuses artifacts that resolve outside their model directory."""
    target = root / "models" / (subdir or name)
    shutil.copytree(MODELS_DIR / source, target)
    model_settings = {
        "name": name,
        "implementation": implementation,
        "parameters": {"version": version, "uri": ".", "extra": extra or {}},
        **(settings or {}),
    }
    _write_json(target / "model-settings.json", model_settings)
    return target


def link_model(root: Path, source: str) -> Path:
    """models/<source> linked as shipped, its own model-settings.json included."""
    target = root / "models" / source
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(MODELS_DIR / source, target_is_directory=True)
    return target


# ------------------------------------------------------------------------------ artifact edits


def read_manifest_json(model_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((model_dir / "manifest.json").read_text())
    return doc


def write_manifest_json(model_dir: Path, doc: dict[str, Any]) -> None:
    (model_dir / "manifest.json").write_text(json.dumps(doc, indent=2))


def replace_artifacts(target: Path, source: Path) -> None:
    """Put another version's manifest and artifacts in place, each file swapped atomically
    (model-settings.json stays)."""
    for name in ("manifest.json", "model.skops", "scaler.skops"):
        if (source / name).exists():
            tmp = target / f".{name}.new"
            shutil.copyfile(source / name, tmp)
            os.replace(tmp, target / name)


def tamper(path: Path) -> None:
    """Flip one bit in the middle of the file."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
