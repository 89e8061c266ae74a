"""A trainer's configuration: a dataclass of defaults, a YAML file over them (``--config file.yaml``),
and command-line flags over both, the way every trainer in train/ reads it.

    @dataclass
    class TrainConfig:
        config: str = ""  # YAML file with any of these fields; command-line flags override it
        max_steps: int = 1500

    cfg = parse_config(TrainConfig)  # python train/x.py --config run.yaml --max_steps 10
"""

from __future__ import annotations

import difflib
import os
import sys
import typing
from dataclasses import dataclass, fields
from typing import TypeVar

T = TypeVar("T")


@dataclass
class TrainerRunConfig:
    """The run fields every step-based trainer shares (train_vae, train_teacher): a trainer's
    config subclasses it, so these flags mean the same everywhere. They come first in ``--help``."""

    checkpoint_every: int = 100
    seed: int = 0
    resume: str = ""  # "latest" (or "true"): the newest complete checkpoint; or a checkpoint folder
    keep_checkpoints: int = 2
    time_limit_minutes: float = 0.0  # checkpoint and stop past this; 0 = no limit
    mixed_precision: str = "no"


def parse_config(cls: type[T], argv: list[str] | None = None) -> T:
    """Defaults <- YAML file (``--config``) <- command-line flags.

    ``cls`` is a dataclass with a ``config: str`` field; its fields are the flags
    (``HfArgumentParser``: ``--name value``, ``--flag false`` / ``--no_flag`` for booleans).
    The YAML file holds any of the fields as ``name: value``; every key must be a field.
    A flag given on the command line wins over the file. A user's mistake (a missing or
    malformed file, an unknown key, a value of the wrong type) exits with one sentence."""
    from transformers import HfArgumentParser

    if "config" not in {f.name for f in fields(cls)}:
        raise TypeError(f"{cls.__name__} needs a `config: str` field to take a YAML file.")
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser(cls)
    (cfg,) = parser.parse_args_into_dataclasses(args=argv)
    if not cfg.config:
        return cfg
    values = read_yaml(cfg.config, cls)
    # flags given on the command line win over the file
    # (by the parser's own options: `--no_cd` sets `cd`, `--fake-lr` sets `fake_lr`)
    flags = {a.split("=")[0] for a in argv if a.startswith("--")}
    given = {action.dest for action in parser._actions if flags & set(action.option_strings)}
    for key, value in values.items():
        if key not in given:
            setattr(cfg, key, value)
    return cfg


def read_yaml(path: str, cls: type) -> dict:
    """The ``name: value`` pairs of a YAML config file, checked against the fields of ``cls``
    and converted to their types."""
    import yaml

    if not os.path.isfile(path):
        raise SystemExit(f"error: config file {path} not found; pass an existing YAML file.")
    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise SystemExit(f"error: {path} is not valid YAML ({problem}{where}); fix it to `name: value` lines.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SystemExit(f"error: config file {path} cannot be read ({err}); pass a readable YAML text file.") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise SystemExit(f"error: {path} must hold `name: value` lines (a YAML mapping), not a {type(values).__name__}.")
    types = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(types), key=str)
    if unknown:
        hints = [
            f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(str(k), types, n=1)) else repr(k) for k in unknown
        ]
        raise SystemExit(f"error: {path} has unknown keys {', '.join(hints)}; use the trainer's flags without the dashes (see --help).")
    return {key: _typed(value, types[key], key, path) for key, value in values.items()}


def _typed(value, kind: type, key: str, path: str):
    """``value`` as a ``kind`` where YAML read it as another scalar type without loss
    (``1`` for a float, ``1e-4``, which YAML reads as text, for a float); else one sentence."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, str):
            try:
                value, ok = int(value), True
            except ValueError:
                pass
    elif kind is float:
        ok = isinstance(value, int | float | str) and not isinstance(value, bool)
        if ok:
            try:
                value = float(value)
            except ValueError:
                ok = False
    elif kind is str:
        ok = isinstance(value, str | int | float | bool)  # `resume: true`, `timesteps: 999`
        value = str(value) if ok else value
    else:
        ok = True  # other field types are taken as YAML gives them
    if not ok:
        wanted = {bool: "true or false", int: "a whole number", float: "a number"}.get(kind, "text")
        raise SystemExit(f"error: {path}: {key} must be {wanted}, got {value!r}; fix that line of the file.")
    return value
