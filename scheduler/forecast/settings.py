"""`--set KEY=VALUE` for `corral whatif`: a change to the live configuration, keyed as the cluster file.

    queues.<queue>.quota.<GPU type>=128      queues.<queue>.borrowing_limit=64|null
    queues.<queue>.lending_limit=0|null      queues.<queue>.weight=2     queues.<queue>.cohort=lab
    queues.<queue>.default_time_limit_s=3600 priority_classes.<class>.value=500
    priority_classes.<class>.preempts_lower=false
    default_time_limit_s=86400|null          policy.<knob>=<value>  (PolicyConfig's knobs)

Values are YAML scalars (`128`, `false`, `null`, `0.5`, `[3600, 36000]`). An unknown key or a value
its field refuses is a SettingError: one line naming the key and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from scheduler.model.queue import ClusterConfig, PriorityClass, Queue
from scheduler.policy.config import PolicyConfig

__all__ = ["SettingError", "apply_settings", "parse_setting"]

_QUEUE_FIELDS = ("quota", "borrowing_limit", "lending_limit", "weight", "cohort", "default_time_limit_s")
_CLASS_FIELDS = ("value", "preempts_lower")


class SettingError(ValueError):
    """A --set that cannot be applied; the message is one line naming the key and the fix."""


def parse_setting(text: str) -> tuple[str, Any]:
    """'KEY=VALUE' → (key, value read as a YAML scalar)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SettingError(f"--set {text!r}: expected KEY=VALUE, e.g. queues.research.quota.H100=128")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise SettingError(
            f"--set {key}: {raw!r} is not a value (a number, true/false, null or a word)"
        ) from None
    return key, value


def apply_settings(
    cluster: ClusterConfig, policy: PolicyConfig, settings: Sequence[tuple[str, Any]]
) -> tuple[ClusterConfig, PolicyConfig]:
    """The configuration with every setting applied, in order (validated as the cluster file is)."""
    queues = {q.name: q.model_dump() for q in cluster.queues}
    classes = {p.name: p.model_dump() for p in cluster.priority_classes}
    knobs = policy.model_dump()
    top: dict[str, Any] = {"default_time_limit_s": cluster.default_time_limit_s}
    for key, value in settings:
        parts = key.split(".")
        if parts[0] == "queues":
            _set_queue(queues, parts, key, value)
        elif parts[0] == "priority_classes":
            _set_class(classes, parts, key, value)
        elif parts[0] == "policy":
            if len(parts) != 2 or parts[1] not in PolicyConfig.model_fields:
                raise SettingError(
                    f"--set {key}: unknown policy knob; the knobs are {', '.join(PolicyConfig.model_fields)}"
                )
            knobs[parts[1]] = value
            _check(key, lambda: PolicyConfig(**knobs))
        elif parts == ["default_time_limit_s"]:
            top["default_time_limit_s"] = value
        else:
            raise SettingError(
                f"--set {key}: unknown key; use queues.<queue>.<field>, priority_classes.<class>.<field>, "
                "policy.<knob> or default_time_limit_s"
            )
    new_queues = tuple(_check(f"queues.{name}", lambda d=d: Queue(**d)) for name, d in queues.items())
    new_classes = tuple(
        _check(f"priority_classes.{n}", lambda d=d: PriorityClass(**d)) for n, d in classes.items()
    )
    changed = _check(
        "default_time_limit_s",
        lambda: ClusterConfig(
            nodes=cluster.nodes,
            queues=new_queues,
            priority_classes=new_classes,
            default_time_limit_s=top["default_time_limit_s"],
        ),
    )
    return changed, _check("policy", lambda: PolicyConfig(**knobs))


def _set_queue(queues: dict[str, dict[str, Any]], parts: list[str], key: str, value: Any) -> None:
    if len(parts) < 3:
        raise SettingError(f"--set {key}: name a queue and a field, e.g. queues.research.quota.H100=128")
    name, field = parts[1], parts[2]
    if name not in queues:
        raise SettingError(f"--set {key}: no queue {name!r}; the queues are {', '.join(sorted(queues))}")
    if field not in _QUEUE_FIELDS:
        raise SettingError(
            f"--set {key}: unknown queue field {field!r}; the fields are {', '.join(_QUEUE_FIELDS)}"
        )
    if field == "quota":
        if len(parts) != 4:
            raise SettingError(f"--set {key}: name the GPU type, e.g. queues.{name}.quota.H100=128")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SettingError(f"--set {key}: a quota is a whole number of GPUs ≥ 0 (got {value!r})")
        queues[name]["quota"] = {**queues[name]["quota"], parts[3]: value}
    elif len(parts) != 3:
        raise SettingError(f"--set {key}: queues.{name}.{field} has no sub-keys")
    else:
        queues[name][field] = value
    _check(key, lambda: Queue(**queues[name]))


def _set_class(classes: dict[str, dict[str, Any]], parts: list[str], key: str, value: Any) -> None:
    if len(parts) != 3:
        raise SettingError(
            f"--set {key}: name a priority class and a field, e.g. priority_classes.high.value=500"
        )
    name, field = parts[1], parts[2]
    if name not in classes:
        raise SettingError(
            f"--set {key}: no priority class {name!r}; the classes are {', '.join(sorted(classes))}"
        )
    if field not in _CLASS_FIELDS:
        raise SettingError(f"--set {key}: unknown field {field!r}; the fields are {', '.join(_CLASS_FIELDS)}")
    classes[name][field] = value
    _check(key, lambda: PriorityClass(**classes[name]))


def _check(key: str, build: Any) -> Any:
    try:
        return build()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        what = key if not where or key.endswith(where) else f"{key} ({where})"
        raise SettingError(f"--set {what}: {err['msg']} (got {err.get('input')!r})") from None
    except ValueError as exc:
        raise SettingError(f"--set {key}: {' '.join(str(exc).split())}") from None
