"""Policy knobs from a file and the environment, with one precedence for simulator and controller:

    PolicyConfig's defaults < the file < CORRAL_POLICY_<KNOB> environment variables < overrides

"The file" is a policy file (`corral sim --policy-config`: its `policy:` mapping or the whole
document) or the `policy:` mapping of a live cluster file; overrides are explicit command-line
choices. PolicyConfig itself is a plain frozen model: reading files and the environment happens
here only, so the policy code stays a pure function of its inputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from scheduler.policy.config import PolicyConfig

ENV_PREFIX = "CORRAL_POLICY_"


class PolicyConfigError(ValueError):
    """Policy knobs that cannot be used: one line naming where they came from, the knob and the fix."""


def policy_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The knobs set by CORRAL_POLICY_<KNOB> variables (a misspelt one is an error, never ignored).

    Values are read as pydantic reads strings (`9`, `0.5`, `true`); a list is JSON (`[3600, 36000]`).
    """
    env = os.environ if environ is None else environ
    knobs: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.upper().startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in PolicyConfig.model_fields:
            raise PolicyConfigError(
                f"{key}: unknown policy knob; the knobs are "
                f"{', '.join(ENV_PREFIX + f.upper() for f in PolicyConfig.model_fields)}"
            )
        knobs[name] = _env_value(key, raw)
    try:
        PolicyConfig(**knobs)
    except ValidationError as exc:
        err = exc.errors()[0]
        knob = ".".join(str(p) for p in err["loc"][:1])
        raise PolicyConfigError(f"{ENV_PREFIX}{knob.upper()}: {err['msg']}") from None
    return knobs


def _env_value(key: str, raw: str) -> Any:
    if not raw.lstrip().startswith("["):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise PolicyConfigError(f"{key}: not a JSON list (write it like [3600, 36000])") from None


def read_policy_file(path: str | Path) -> dict[str, Any]:
    """A policy file's knobs: its `policy:` mapping, or the whole document if it has none."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a UTF-8 text file"
        raise PolicyConfigError(f"{path}: cannot read ({why}); check the path") from None
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise PolicyConfigError(f"{path}{where}: not valid YAML ({problem}); fix the syntax") from None
    section = loaded.get("policy", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(section, dict):
        raise PolicyConfigError(f"{path}: the policy config must be a mapping of knob: value")
    return dict(section)


def resolve_policy(
    from_file: Mapping[str, Any],
    source: str,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    where: str = "",
) -> PolicyConfig:
    """The PolicyConfig of `from_file` (read from `source`, under the key path `where`, e.g.
    "policy." in a cluster file), the environment and `overrides`."""
    unknown = sorted(str(k) for k in from_file if k not in PolicyConfig.model_fields)
    if unknown:
        raise PolicyConfigError(
            f"{source}: {where}{unknown[0]}: unknown policy knob; "
            f"the knobs are {', '.join(PolicyConfig.model_fields)}"
        )
    try:
        PolicyConfig(**from_file)
    except ValidationError as exc:
        err = exc.errors()[0]
        knob = ".".join(str(p) for p in err["loc"])
        raise PolicyConfigError(f"{source}: {where}{knob}: {err['msg']}") from None
    data = {**from_file, **policy_from_env(environ), **(overrides or {})}
    try:
        return PolicyConfig(**data)
    except ValidationError as exc:  # only an override can be wrong here
        err = exc.errors()[0]
        raise PolicyConfigError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def load_policy(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PolicyConfig:
    """The policy of a policy file (or none), the environment and `overrides`."""
    from_file = read_policy_file(path) if path is not None else {}
    return resolve_policy(from_file, str(path) if path is not None else "defaults", overrides, environ)
