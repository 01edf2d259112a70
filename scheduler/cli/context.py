"""Where the CLI finds the API: `<CORRAL_HOME>/context.yaml`, overridden by environment variables.

    CORRAL_HOME      the local config folder (default: the platform's config dir, e.g. ~/.config/corral)
    CORRAL_API_URL   the API's base URL (default: the file's api_url, else DEFAULT_API_URL)
    CORRAL_TOKEN     the bearer token (default: the file's token)

context.yaml (written by `corral up`, mode 0600 because it holds a token):

    api_url: http://127.0.0.1:8470
    token: "..."
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import yaml

__all__ = [
    "DEFAULT_API_URL",
    "Context",
    "ContextError",
    "context_path",
    "corral_home",
    "load_context",
    "save_context",
]

DEFAULT_API_URL = "http://127.0.0.1:8470"  # `corral serve`'s default port


class ContextError(ValueError):
    """A context file that cannot be read (one line naming the file and the fix)."""


@dataclass(frozen=True, slots=True)
class Context:
    api_url: str = DEFAULT_API_URL
    token: str | None = None


def corral_home() -> Path:
    home = os.environ.get("CORRAL_HOME")
    return Path(home).expanduser() if home else Path(platformdirs.user_config_dir("corral"))


def context_path() -> Path:
    return corral_home() / "context.yaml"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ContextError(f"{path}: cannot read ({exc.strerror or exc}): fix its permissions") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ContextError(f"{path}: not valid YAML: fix or delete it (`corral up` writes it)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ContextError(f"{path}: must be a mapping with api_url and token: fix or delete it")
    return data


def load_context() -> Context:
    data = _read_file(context_path())
    api_url = os.environ.get("CORRAL_API_URL") or data.get("api_url") or DEFAULT_API_URL
    token = os.environ.get("CORRAL_TOKEN") or data.get("token")
    if not isinstance(api_url, str) or not isinstance(token, str | None):
        raise ContextError(f"{context_path()}: api_url and token must be strings: fix or delete it")
    return Context(api_url=api_url.rstrip("/"), token=token or None)


def save_context(ctx: Context) -> Path:
    """Write the context file, readable by its owner only (it holds a token)."""
    path = context_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"api_url": ctx.api_url, "token": ctx.token}
    tmp = path.with_suffix(".yaml.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    os.chmod(tmp, 0o600)  # an existing tmp file keeps its old mode through O_CREAT
    os.replace(tmp, path)
    return path
