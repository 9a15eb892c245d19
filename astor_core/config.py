"""One config for a whole run, read from params.yaml (the file DVC tracks).

Each section of params.yaml maps onto the dataclass config of the module that owns those
constants; this module only composes them. Unknown keys are errors that name the section
and the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

SECTIONS: dict[str, str] = {
    "data": "astor_core.data.config:DataConfig",
    "sandbox": "astor_core.sandbox:SandboxConfig",
    "rewards": "astor_core.tasks:RewardConfig",
    "scheduler": "astor_core.method.scheduler:SchedulerConfig",
    "calibration": "astor_core.method.calibration:CalibrationConfig",
    "bootstrap": "astor_core.demo:BootstrapConfig",
    "tiny": "astor_core.policy.model:TinyModelConfig",
    "sft": "astor_core.policy.sft:SFTConfig",
    "model": "astor_core.policy.model:ModelConfig",
    "rollout": "astor_core.policy.rollout:RolloutConfig",
    "trainer": "astor_core.policy.trainer:TrainerConfig",
    "compare": "astor_core.comparison:CompareConfig",
    "train": "astor_core.config:TrainConfig",
}
"""params.yaml section -> 'module:DataclassName' owning its fields."""


class ConfigError(ValueError):
    """A params file or override that does not match the configs (names the section and key)."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key
        """The dotted section.key the error is about ('' when it is about the whole section)."""


def _scheduler_name(name: str) -> str:
    """A name make_scheduler accepts (a specialist of a known task included).

    >>> _scheduler_name("specialist:code_generation")
    'specialist:code_generation'
    """
    from astor_core import TASKS
    from astor_core.method.scheduler import SCHEDULER_NAMES

    task = name.split(":", 1)[1] if name.startswith("specialist:") else None
    if name in SCHEDULER_NAMES[:-1] or task in TASKS:
        return name
    raise ValueError(f"expected one of {', '.join(SCHEDULER_NAMES)}")


@dataclass
class TrainConfig:
    """The RL loop (params.yaml section ``train``)."""

    scheduler: Annotated[str, AfterValidator(_scheduler_name)] = "astor"
    """Scheduler name (astor, uniform, proportional, ucb, specialist:<task>, ablations)."""
    rounds: Annotated[int, Field(ge=0)] = 8
    """RL rounds to run (a resumed run continues up to this count)."""
    eval_every: Annotated[int, Field(ge=1)] = 4
    """Evaluate on the held-out pools every N rounds (and after the last round)."""
    eval_items_per_task: Annotated[int, Field(ge=1)] = 48
    """Held-out items per task used by each evaluation (fixed, first N by prompt_id)."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Seed of the scheduler, sampling and update."""
    run_dir: str = "runs/astor"
    """Where checkpoints, per-round CSVs and the MLflow run id of this run live."""
    experiment: str = "astor"
    """MLflow experiment name."""
    parent_run_id: str = ""
    """MLflow run this run is a child of ('' for none; `astor compare` sets it)."""
    reward_chunk_size: Annotated[int, Field(ge=1)] = 128
    """Rollouts per reward task run (the unit of reward fan-out and of its retries). One chunk
    already spreads over the sandbox's workers, so locally more chunks per round only add
    task runs; smaller chunks pay off across machines (task_runner 'dask')."""
    task_runner: Literal["thread", "dask"] = "thread"
    """Task runner for the reward fan-out: 'thread' (local) or 'dask' (local Dask cluster or address)."""
    task_runner_workers: Annotated[int, Field(ge=1)] = 2
    """Workers of that task runner."""
    dask_address: str = ""
    """Address of an existing Dask scheduler ('' starts a local cluster)."""
    rollout_retries: Annotated[int, Field(ge=0)] = 2
    """Retries (with exponential backoff) of a failed rollout stage."""
    reward_retries: Annotated[int, Field(ge=0)] = 2
    """Retries (with exponential backoff) of a failed reward chunk."""
    stage_timeout_s: Annotated[float, Field(gt=0)] = 1800.0
    """Timeout of one stage (task run), in seconds."""
    train_stage_tags: tuple[str, ...] = ()
    """Prefect tags of the train-round task run, e.g. ['gpu'] with `prefect concurrency-limit create gpu 1` to cap GPU use across runs (tags feed concurrency limits; they route nothing: a work pool does, prefect.yaml). Off by default: a tagged task run takes a concurrency lease through the API (~2 s per round on the ephemeral API here, docs/PERFORMANCE.md)."""
    registered_model_name: str = "astor-policy"
    """MLflow registered model the final policy becomes a new version of (transformers flavour, tagged with the scheduler and pools digest); '' logs no model."""


@dataclass
class AstorConfig:
    """Every section of a run's config."""

    sections: dict[str, Any] = field(default_factory=dict)
    """Section name -> its dataclass instance."""

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for MLflow params and JSON)."""
        return {name: dataclasses.asdict(obj) for name, obj in self.sections.items()}


def _resolve(path: str) -> type:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def build_section(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """Build a (possibly nested) dataclass config from a mapping: unknown keys are rejected
    here, then pydantic checks every value against the field's type and its range rules (the
    field's ``Annotated`` constraints and the dataclass's ``__post_init__``)."""
    _reject_unknown(cls, data, where)
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as exc:
        raise _config_error(exc, where) from None


def _reject_unknown(cls: type, data: Any, where: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; known: {sorted(known)}", f"{where}.{unknown[0]}"
        )
    for key, value in data.items():
        sub = _dataclass_in(hints.get(key))
        if sub is not None and isinstance(value, Mapping):
            _reject_unknown(sub, value, f"{where}.{key}")


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def _config_error(exc: ValidationError, where: str) -> ConfigError:
    """One line for the first broken rule: `where.key = value: expected ...`.

    >>> try:
    ...     _adapter(TrainConfig).validate_python({"rounds": "abc"})
    ... except ValidationError as e:
    ...     print(_config_error(e, "train"))
    train.rounds = 'abc': expected a valid integer, unable to parse string as an integer
    """
    err = exc.errors(include_url=False)[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not err["loc"]:  # a __post_init__ rule: its message names the key and the value
        section = where.rsplit(".", 1)[-1]
        head, _, rest = msg.removeprefix(f"{section}: ").partition(" ")
        if isinstance(err["input"], Mapping) and head in err["input"]:
            key = f"{where}.{head}"
            return ConfigError(f"{key} = {err['input'][head]!r}: {rest}", key)
        return ConfigError(f"{where}: {msg.removeprefix(f'{section}: ')}")
    key = ".".join([where, *(str(part) for part in err["loc"])])
    msg = msg.replace("Input should be ", "expected ", 1)
    return ConfigError(f"{key} = {err['input']!r}: {msg}", key)


def _dataclass_in(hint: Any) -> type | None:
    if hint is None:
        return None
    if is_dataclass(hint):
        return hint  # type: ignore[return-value]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        for arg in typing.get_args(hint):
            if is_dataclass(arg):
                return arg  # type: ignore[return-value]
    return None


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`section.key=value` strings (values parsed as YAML) -> nested dict.

    >>> parse_overrides(["train.rounds=3", "train.scheduler=uniform"])
    {'train': {'rounds': 3, 'scheduler': 'uniform'}}
    """
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"-S override {item!r}: the value is not valid YAML") from None
        _set_path(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | Path | None = "params.yaml",
    overrides: Sequence[str] | Mapping[str, Any] = (),
    sections: Sequence[str] | None = None,
) -> AstorConfig:
    """Read params.yaml (missing file or section -> defaults), apply overrides, build configs."""
    raw: dict[str, Any] = {}
    if path is not None and Path(path).exists():
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    extra = parse_overrides(overrides) if not isinstance(overrides, Mapping) else overrides
    raw = _merge(raw, extra)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section(s) {unknown}; known: {sorted(SECTIONS)}", unknown[0]
        )
    built: dict[str, Any] = {}
    for name in sections or SECTIONS:
        try:
            built[name] = build_section(_resolve(SECTIONS[name]), raw.get(name) or {}, name)
        except ConfigError as exc:
            overridden = _has_path(extra, exc.key or name)
            source = "-S override" if overridden else str(path)
            raise ConfigError(f"{source}: {exc}", exc.key) from None
    return AstorConfig(sections=built)


def _has_path(tree: Mapping[str, Any], dotted: str) -> bool:
    """Whether the nested mapping holds the dotted key.

    >>> _has_path({"train": {"rounds": 3}}, "train.rounds"), _has_path({"train": {}}, "train.seed")
    (True, False)
    """
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
