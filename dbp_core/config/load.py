"""Experiment TOML in and out: a file or text → a validated ``ExperimentConfig`` (``--set``
overrides applied, relative paths resolved against the file's folder), and back to TOML
(tomli-w), with the paths made absolute when a run freezes its config."""
from __future__ import annotations

import copy
import os
from pathlib import Path

from pydantic import ValidationError

from ..plugins import is_import_path
from .errors import ConfigError, translate
from .experiment import ExperimentConfig
from .overrides import apply_overrides, is_utf8, plain_problems, tomllib


def validate_config(data: dict, *, file: str | os.PathLike | None = None, base_dir: str | os.PathLike | None = None,
                    overrides: list[str] | None = None) -> ExperimentConfig:
    """Validate a parsed TOML document (plus overrides) → ExperimentConfig, or raise ConfigError."""
    problems = plain_problems(data)
    if problems:
        raise ConfigError(file, problems)
    data = copy.deepcopy(data)
    for item in overrides or []:
        if not is_utf8(item):
            key = item.partition("=")[0]
            raise ConfigError(file, [{"path": key if is_utf8(key) else "<override>", "value": None,
                                      "type": "encoding", "message": f"--set {ascii(item)[:80]}: not valid UTF-8 "
                                      "(a byte that is not UTF-8 in the command line); expected UTF-8 text"}])
    overridden = apply_overrides(data, list(overrides or []), str(file) if file else None)
    problems = plain_problems(data)
    if problems:
        raise ConfigError(file, problems)
    if base_dir is None:
        base_dir = Path(file).resolve().parent if file else Path.cwd()
    try:
        cfg = ExperimentConfig.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ConfigError(file, translate(exc, ExperimentConfig, overridden)) from None
    except RecursionError:
        raise ConfigError(file, [{"path": "", "value": None, "type": "depth",
                                  "message": "nested too deeply to validate"}]) from None
    cfg._base_dir = str(base_dir)
    return cfg


def loads_config(text: str, *, file: str | None = None, base_dir: str | None = None,
                 overrides: list[str] | None = None) -> ExperimentConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, [{"path": "", "value": None, "type": "toml", "message": f"not valid TOML: {exc}"}]) from None
    except RecursionError:
        raise ConfigError(file, [{"path": "", "value": None, "type": "depth", "message": "tables or arrays nested "
                                  "too deeply to read; expected the tables and values of an experiment "
                                  "(docs/config.md)"}]) from None
    return validate_config(data, file=file, base_dir=base_dir, overrides=overrides)


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and validate an experiment TOML; relative paths inside resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, [{"path": "", "value": None, "type": "file", "message": "file not found"}]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [{"path": "", "value": None, "type": "file", "message": f"cannot read: {exc}"}]) from None
    return loads_config(text, file=str(path), base_dir=str(path.resolve().parent), overrides=overrides)


def _to_toml_data(cfg: ExperimentConfig, *, absolute_paths: bool) -> dict:
    data = cfg.model_dump(mode="json", exclude_none=True)
    if absolute_paths:
        base = Path(getattr(cfg, "_base_dir", None) or os.getcwd())
        m = data["models"]
        for key, keywords in (("classifier", ("default",)), ("diffusion", ("default", "none"))):
            if m[key] not in keywords and not is_import_path(m[key]):
                m[key] = str((base / Path(m[key]).expanduser()).resolve())
        for key in ("root", "class_index"):
            if key in data["data"]:
                data["data"][key] = str((base / Path(data["data"][key]).expanduser()).resolve())
    return data


def dumps_config(cfg: ExperimentConfig, *, absolute_paths: bool = False) -> str:
    import tomli_w
    data = _to_toml_data(cfg, absolute_paths=absolute_paths)
    head = {k: data.pop(k) for k in ("name", "description", "seed", "device", "threads", "stages") if k in data}
    return tomli_w.dumps({**head, **data})


def save_config(cfg: ExperimentConfig, path: str | os.PathLike, *, absolute_paths: bool = False) -> None:
    """Write ``cfg`` as TOML (tomli-w). ``absolute_paths`` makes checkpoint/data paths absolute —
    used when freezing a run's config so it resolves from anywhere."""
    Path(path).write_text(dumps_config(cfg, absolute_paths=absolute_paths), encoding="utf-8")
