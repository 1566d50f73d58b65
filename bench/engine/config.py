"""The typed configuration of one run, from YAML, `--set key=value` and `--method NAME:k=v,...`.

Every field has a default; `resolve` fills the ones that depend on others (the clip shape from the model
preset), and `run_id` hashes the resolved configuration so that a run is identified by what it does.
"""

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch._dynamo
import yaml

from vtbench.core.budget import Budget
from vtbench.core.spec import MethodSpec
from vtbench.datasets import defaults_before_stated
from vtbench.datasets import run_defaults as data_defaults
from vtbench.errors import ConfigError
from vtbench.methods import check_methods, identity_params
from vtbench.methods.reductions import DEFAULT_SWEEP, resolve_sweep
from vtbench.models import DEFAULTS_BEFORE_STATED, PRESETS, model_args
from vtbench.models import run_defaults as model_defaults

from .init import check_init, fingerprint
from .trackers import KNOWN


@dataclass
class RunConfig:
    # what is trained
    dataset: str = "synthetic"
    data_args: dict[str, Any] = field(default_factory=dict)
    model: str = "vit_tiny"
    arch: str = "joint"  # joint (VideoViT) | factorised (ViViT-FE)
    model_args: dict[str, Any] = field(default_factory=dict)
    methods: list[MethodSpec] = field(default_factory=list)
    # where the weights start: {} (at random) or {file: PATH, format: timm | videomae | vtbench, ...}
    # (vtbench.engine.init); the file enters the run id by its content, not its path
    init: dict[str, Any] = field(default_factory=dict)
    # the base batch shape; frames, size and stride default to the preset's
    frames: int | None = None
    size: int | None = None
    stride: int | None = None
    batch_size: int = 16
    # budget and optimisation
    budget: str = "60s"
    seed: int = 0
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: float = 0.1
    lr_decay: str = "linear"  # linear | cosine
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    label_smoothing: float = 0.0
    layer_decay: float = 1.0  # each block's learning rate times layer_decay per block above it (1: off)
    # evaluation, logging, checkpoints
    eval_every: float = 0.1  # fraction of progress between evaluations
    # one fixed evaluation set: the final point scores its first eval_clips clips (4096: a sampling error of at
    # most 0.8 points), the points before it and the reduced-token sweep its first eval_subset
    eval_clips: int = 4096
    eval_subset: int = 1024
    eval_batch_size: int = 64
    # reduced-token evaluation settings every run shares (vtbench.methods.reductions); None: the default sweep
    eval_sweep: list[str] | None = None
    eval_sweep_at: str = "final"  # final | every (evaluation point)
    log_every: int = 10  # steps summarised in one steps.parquet row
    checkpoint_every: float = 300.0  # wall seconds between checkpoints (one is also written at each evaluation)
    # where it runs
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: bool = False  # torch.compile each transformer block (compilation on the clock, reported as compile_s)
    compile_backend: str = "inductor"  # torch.compile's backend (torch._dynamo.list_backends(exclude_tags=()))
    nproc: int = 1  # processes that carry the run together (torch.distributed DDP); batch_size stays the global batch
    monitor_interval: float = 0.1  # seconds between NVML samples on a GPU
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    # live experiment tracking of what the run's files hold (vtbench.engine.trackers); not part of the run's id
    loggers: list[str] = field(default_factory=list)  # tensorboard | mlflow | wandb | csv

    def resolve(self) -> "RunConfig":
        """A copy with every default that depends on other fields filled in, validated."""
        if self.model not in PRESETS:
            raise ConfigError(f"unknown model preset {self.model!r}; known: {', '.join(PRESETS)}")
        preset = PRESETS[self.model]
        resolved = dataclasses.replace(
            self,
            frames=preset.frames if self.frames is None else self.frames,
            size=preset.size if self.size is None else self.size,
            stride=preset.stride if self.stride is None else self.stride,
            methods=[MethodSpec(m.name, dict(m.params)) for m in self.methods],
            budget=str(Budget.parse(self.budget)),  # one canonical form: 1min and 60s are one run
        )
        # defaults that depend on the data set or the start, stated so that config.yaml says what the run did
        resolved.model_args = {**model_defaults(self.arch, self.init.get("format")), **self.model_args}
        resolved.data_args = {**data_defaults(self.dataset), **self.data_args}
        if any(m.name == "baseline" and m.params for m in resolved.methods):
            raise ConfigError("method 'baseline' has no parameters; it is the empty method list")
        resolved.methods = [m for m in resolved.methods if m.name != "baseline"]
        check_methods(resolved.methods)  # each against its method's declared parameters, before a run id exists
        resolved.validate()
        sweep = DEFAULT_SWEEP if self.eval_sweep is None else self.eval_sweep
        resolved.eval_sweep = resolve_sweep(sweep, resolved.token_grid(preset.tubelet))
        return resolved

    def token_grid(self, preset_tubelet: tuple[int, int, int]) -> tuple[int, int, int]:
        """The base clip's token grid (T, H, W) for the model's tubelet."""
        tt, p, _ = tuple(self.model_args.get("tubelet", preset_tubelet))
        if self.frames % tt or self.size % p:
            raise ConfigError(f"a clip of {self.frames} frames x {self.size}px does not divide into tubelets of "
                              f"{tt}x{p}x{p}")
        return self.frames // tt, self.size // p, self.size // p

    def validate(self) -> None:
        if self.stride < 0:
            raise ConfigError(f"stride must be at least 1, or 0 for one frame per equal segment; got {self.stride}")
        positive = ("batch_size", "eval_clips", "eval_subset", "eval_batch_size", "log_every", "frames", "size")
        for name in positive:
            if not 1 <= getattr(self, name) <= LARGEST_COUNT:
                raise ConfigError(f"{name} must be a whole number from 1 to {LARGEST_COUNT}, got {getattr(self, name)}")
        if not 1 <= self.nproc <= MAX_PROCESSES:
            raise ConfigError(f"nproc must be a whole number from 1 to {MAX_PROCESSES}, got {self.nproc}")
        if self.batch_size < self.nproc:
            raise ConfigError(f"batch_size {self.batch_size} cannot be shared by nproc {self.nproc} processes: each "
                              "takes a share of every batch, so batch_size must be at least nproc")
        if self.compile:
            backends = torch._dynamo.list_backends(exclude_tags=())
            if self.compile_backend not in backends:
                raise ConfigError(f"compile_backend {self.compile_backend!r} is not a torch.compile backend; known: "
                                  f"{', '.join(backends)}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be a whole number from 0 to 2**63 - 1, got {self.seed}")
        if "device" in self.data_args:
            raise ConfigError("data_args.device is not a data argument: a run's batches go to the device its model "
                              "trains on")
        for name in ("lr", "weight_decay", "warmup", "grad_clip", "label_smoothing", "layer_decay", "eval_every",
                     "checkpoint_every", "monitor_interval"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.monitor_interval <= 0:
            raise ConfigError(f"monitor_interval must be > 0 seconds, got {self.monitor_interval}")
        if not 0 < self.eval_every <= 1:
            raise ConfigError(f"eval_every must be a fraction of progress in (0, 1], got {self.eval_every}")
        for name in ("warmup", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a fraction in [0, 1), got {getattr(self, name)}")
        for name, allowed in (("arch", ("joint", "factorised")), ("lr_decay", ("linear", "cosine")),
                              ("precision", ("auto", "fp32", "bf16")), ("eval_sweep_at", ("final", "every"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1] (1: every layer at the full learning rate), "
                              f"got {self.layer_decay}")
        check_init(self.init, self.arch, self.model, self.model_args)
        for name in ("weight_decay", "grad_clip", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        unknown = [name for name in self.loggers if name not in KNOWN]
        if unknown or len(set(self.loggers)) != len(self.loggers):
            raise ConfigError(f"loggers must be a list of different ones of {', '.join(KNOWN)}; got {self.loggers}")
        model_args(self.model, self.arch, self.model_args)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["methods"] = [{m.name: dict(m.params)} for m in self.methods]
        return data

    def label(self) -> str:
        """The method list as written on the command line (`baseline` if empty), with the arch if not joint."""
        methods = " + ".join(str(m) for m in self.methods) or "baseline"
        return methods if self.arch == "joint" else f"{methods} ({self.arch})"

    def run_id(self) -> str:
        data = self.to_dict()
        for name, default in LATER_FIELDS.items():  # at its default, a later setting leaves the id as it was
            if data[name] == default:
                del data[name]
        for name in OBSERVERS:  # watching a run does not make it another run
            del data[name]
        for name, before in (("model_args", DEFAULTS_BEFORE_STATED.get(self.arch, {})),
                             ("data_args", defaults_before_stated(self.dataset))):
            for key, value in before.items():  # stated at the value it had unstated: the run it was
                if key in data[name] and data[name][key] == value:
                    del data[name][key]
        if data.get("init"):  # the weights it starts from, by their content: a moved file is the same start
            data["init"] = fingerprint(data["init"])
        data["methods"] = [{m.name: identity_params(m)} for m in self.methods]  # a changed default: another run
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


FIELDS = {f.name: f for f in fields(RunConfig)}
# settings added after results existed, with the value that runs made before them had: finished runs stay found
LATER_FIELDS = {"nproc": 1, "compile": False, "compile_backend": "inductor", "init": {}, "layer_decay": 1.0}
OBSERVERS = ("loggers",)  # settings of who watches a run, not of the run: outside its id and its comparisons
MAX_PROCESSES = 65536
LARGEST_COUNT = 2**31 - 1  # batch sizes, clip counts, frames, pixels


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_scalar(text: str) -> Any:
    """A command-line value as YAML reads it, except that 3e-4 is a number (YAML 1.1 reads it as text)."""
    if _NUMBER.match(text.strip()):
        return float(text) if any(c in text for c in ".eE") else int(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_method(text: str) -> MethodSpec:
    """`name` or `name:key=value,key=value` (values parsed as YAML scalars)."""
    name, _, args = text.partition(":")
    params = {}
    for item in filter(None, args.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"method argument {item!r} in {text!r} is not key=value")
        params[key.strip()] = parse_scalar(value)
    return MethodSpec(name.strip(), params)


def method_spec(entry: Any, where: str = "methods") -> MethodSpec:
    """A method list entry: `name`, `name:k=v`, `{name: {params}}` or `{name: null}`."""
    if isinstance(entry, MethodSpec):
        return entry
    if isinstance(entry, str):
        return parse_method(entry)
    if isinstance(entry, dict) and len(entry) == 1:
        (name, params), = entry.items()
        if params is None:
            params = {}
        if isinstance(params, dict):
            return MethodSpec(str(name), dict(params))
    raise ConfigError(f"{where}: a method is `name` or `{{name: {{param: value}}}}`, got {entry!r}")


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Return `value` as the field's type, or raise naming the key and the expected type."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in options:
        return None
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if origin is float and isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if origin is str and isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        if origin is dict and isinstance(value, dict):
            return value
        if origin is list and isinstance(value, list):
            return list(value)
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{key} expects {expected}, got {value!r}")


def apply(config: RunConfig, values: dict[str, Any], where: str = "") -> RunConfig:
    """Set fields from a mapping (YAML or --set), checking names and types."""
    prefix = f"{where}: " if where else ""
    changes = {}
    for key, value in values.items():
        name, _, sub = str(key).partition(".")
        if name not in FIELDS:
            raise ConfigError(f"{prefix}unknown key {key!r}; allowed: {', '.join(FIELDS)}")
        if name == "methods":
            if not isinstance(value, list):
                raise ConfigError(f"{prefix}methods must be a list, got {value!r}")
            changes[name] = [method_spec(v, f"{prefix}methods") for v in value]
        elif sub:
            if typing.get_origin(FIELDS[name].type) is not dict:
                raise ConfigError(f"{prefix}{name} has no sub-keys; use {name}=VALUE")
            merged = dict(changes.get(name, getattr(config, name)))
            merged[sub] = value
            changes[name] = merged
        else:
            try:
                changes[name] = _check_type(name, value, FIELDS[name].type)
            except ConfigError as err:
                raise ConfigError(f"{prefix}{err}") from None
    return dataclasses.replace(config, **changes)


def parse_set(items: list[str]) -> dict[str, Any]:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not key=value")
        values[key.strip()] = parse_scalar(value)
    return values


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (not: the last one wins)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base constructor says so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; errors name the file and the line. A key given twice in one mapping is refused."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" if not path.exists() else
                          f"config file {path} is not a file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (a YAML file was expected)") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None


def load_run_config(path: str | Path) -> RunConfig:
    data = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config is a mapping of keys to values, got {type(data).__name__}")
    return apply(RunConfig(), data, where=str(path))


def save_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)
