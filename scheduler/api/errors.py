"""One-line messages for invalid job specs, shared by the API (422 bodies) and the CLI (exit 2).

Pydantic reports a list of errors with machine locations; a user wants one line that names the
field, the problem, what they gave and the fix:

    spec.gpus_per_node: must be ≤ 64 (got 100000) — ask for at most 64 GPUs per node; add nodes for more

No FastAPI import here: the CLI uses this module and should start fast.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from scheduler.model.job import MAX_GPUS_PER_NODE, MAX_NODES_PER_JOB, JobSpec

__all__ = ["FIXES", "ApiError", "describe_error", "first_error"]


class ApiError(Exception):
    """An error the client should see: status, one-line message, the field it concerns, headers."""

    def __init__(
        self, status: int, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


FIXES: Mapping[str, str] = {
    "nodes": f"a job spans 1 to {MAX_NODES_PER_JOB} nodes",
    "gpus_per_node": f"ask for 1 to {MAX_GPUS_PER_NODE} GPUs per node; add nodes for more",
    "name": "give a name of 1 to 128 characters",
    "queue": "name your team's queue (see `corral queues`)",
    "priority": "use a priority class such as low, normal or high",
    "time_limit_s": "give a positive number of seconds, or leave it out for no limit",
    "grace_period_s": "give 0 to 3600 seconds",
    "min_runtime_s": "give a number of seconds ≥ 0",
    "command": "give the command as a list of strings or one shell string",
    "env": "give env as a mapping of names to strings",
    "idempotency_key": "use 1 to 128 printable ASCII characters without spaces",
    "grace_s": "give 0 to 3600 seconds",
    # a new token (POST /v1/tokens)
    "team": "give the team's name",
    "queues": "give queue names (see `corral queues`)",
    "max_priority": "name a priority class such as normal",
    "max_gpus_per_job": "give a GPU count ≥ 1",
    "description": "give at most 256 characters",
}

_SPEC_FIELDS = frozenset(JobSpec.model_fields)
_PLAIN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_GOT_LIMIT = 40  # characters of a bad value quoted back (a 60 KB gpu_type is not echoed)


def _part(part: Any) -> str:
    """One element of a field's location, safe to print: odd keys are quoted and cut short."""
    text = str(part)
    if _PLAIN.match(text):
        return text
    shown = repr(text)
    return shown if len(shown) <= _GOT_LIMIT else shown[: _GOT_LIMIT - 4] + "...'"


def _problem(err: Mapping[str, Any], allowed: Collection[str]) -> str:
    kind = str(err.get("type", ""))
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    if kind == "less_than_equal":
        return f"must be ≤ {ctx.get('le')}"
    if kind == "less_than":
        return f"must be < {ctx.get('lt')}"
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx.get('ge')}"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return f"unknown field (allowed: {', '.join(sorted(allowed))})"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind in ("string_type",):
        return "must be a string"
    if kind == "string_pattern_mismatch":
        return "must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
    if kind in ("list_type", "too_short", "too_long"):
        return "must be a list" if kind == "list_type" else str(err.get("msg", "wrong length")).rstrip(".")
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return "must be a mapping (a JSON object)"
    if kind == "json_invalid":
        return f"malformed JSON: {ctx.get('error', 'cannot be parsed')}"
    if kind == "value_error":
        return str(ctx.get("error", err.get("msg", "invalid value")))
    return str(err.get("msg", "invalid value")).rstrip(".")


_SOURCES = {"body": "spec", "query": "query", "path": "path", "header": "header"}


def _field(loc: Sequence[Any]) -> tuple[str, str | None]:
    """('gpus_per_node', 'spec') from FastAPI's ('body', 'gpus_per_node'); 'env.HOME' for nested."""
    source = _SOURCES.get(str(loc[0])) if loc else None
    parts = [_part(p) for p in (loc[1:] if source else loc)]
    return ".".join(parts), source


def describe_error(
    err: Mapping[str, Any], prefix: str = "spec", allowed: Collection[str] = _SPEC_FIELDS
) -> tuple[str, str]:
    """(field, one-line message) for one pydantic error; `prefix` and `allowed` name the model."""
    field, source = _field(err.get("loc", ()))
    if source is not None and source != "spec":
        prefix = source
    problem = _problem(err, allowed)
    kind = str(err.get("type", ""))
    got = ""
    if kind not in ("missing", "json_invalid", "extra_forbidden") and "input" in err:
        value = err["input"]
        if not isinstance(value, dict | list) or len(repr(value)) <= _GOT_LIMIT:
            text = repr(value) if isinstance(value, str) else str(value)
            got = f" (got {text[:_GOT_LIMIT]})"
    top = field.split(".", 1)[0]
    if kind == "json_invalid":
        # the location of a JSON error is a character offset, not a field
        field, fix = "body", "send the spec as a JSON object"
    elif kind == "extra_forbidden":
        fix = "remove it or fix its spelling" + (" (see `corral schema`)" if prefix == "spec" else "")
    elif not field:
        fix = "send the spec as a JSON object" if prefix == "spec" else "send a JSON object"
    else:
        fix = (
            FIXES.get(top, "fix the value") if prefix not in ("query", "path", "header") else "fix the value"
        )
    where = f"{prefix}.{field}" if field and field != "body" else (field or prefix)
    return field or prefix, " ".join(f"{where}: {problem}{got} — {fix}".split())


def first_error(
    errors: Sequence[Mapping[str, Any]], prefix: str = "spec", allowed: Collection[str] = _SPEC_FIELDS
) -> tuple[str, str]:
    """The first error of a list (pydantic orders them by field), as describe_error."""
    if not errors:
        return prefix, f"{prefix}: invalid"
    return describe_error(errors[0], prefix, allowed)
