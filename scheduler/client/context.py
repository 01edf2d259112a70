"""Where the CLI and the Python client find the API: `<CORRAL_HOME>/context.yaml`, overridden by
environment variables.

    CORRAL_HOME      the local config folder (default: the platform's config dir, e.g. ~/.config/corral)
    CORRAL_API_URL   the API's base URL (default: the file's api_url, else DEFAULT_API_URL)
    CORRAL_TOKEN     the bearer token (default: the file's token)

context.yaml (written by `corral up`, created with mode 0600 because it holds a token):

    api_url: http://127.0.0.1:8470
    token: "..."

`corral up` keeps the local installation's admin token here and nowhere else in plain text (the
store has only its digest).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    "file_token",
    "load_context",
    "save_context",
]

DEFAULT_API_URL = "http://127.0.0.1:8470"  # `corral serve`'s default port


class ContextError(ValueError):
    """A context file that cannot be read (one line naming the file and the fix)."""


@dataclass(frozen=True, slots=True)
class Context:
    api_url: str = DEFAULT_API_URL
    token: str | None = field(default=None, repr=False)
    token_source: str = field(default="CORRAL_TOKEN", compare=False)  # named in token errors
    # Replicated controllers: more API URLs, tried in order when the first does not answer.
    fallback_urls: tuple[str, ...] = ()

    @property
    def api_urls(self) -> tuple[str, ...]:
        return (self.api_url, *(u for u in self.fallback_urls if u != self.api_url))


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


def file_token() -> str | None:
    """The token of the context file alone (not the environment's), if it has one."""
    token = _read_file(context_path()).get("token")
    return token if isinstance(token, str) and token else None


def load_context() -> Context:
    """CORRAL_API_URL (one URL, or several separated by commas) wins over the file's api_url and
    api_urls; the first URL that answers is used."""
    data = _read_file(context_path())
    from_env = os.environ.get("CORRAL_API_URL")
    urls: Any = from_env.split(",") if from_env else data.get("api_urls") or [data.get("api_url")]
    source = "CORRAL_TOKEN" if os.environ.get("CORRAL_TOKEN") else f"{context_path()}: token"
    token = os.environ.get("CORRAL_TOKEN") or data.get("token")
    if not isinstance(urls, list) or not all(isinstance(u, str | None) for u in urls):
        raise ContextError(f"{context_path()}: api_urls must be a list of URLs: fix or delete it")
    if not isinstance(token, str | None):
        raise ContextError(f"{context_path()}: api_url and token must be strings: fix or delete it")
    clean = [u.strip().rstrip("/") for u in urls if u and u.strip()] or [DEFAULT_API_URL]
    return Context(api_url=clean[0], token=token or None, token_source=source, fallback_urls=tuple(clean[1:]))


def save_context(ctx: Context) -> Path:
    """Write the context file, readable by its owner only (it holds a token): the file is created
    with mode 0600 (never written first and restricted after) and then renamed into place."""
    path = context_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data: dict[str, Any] = {"api_url": ctx.api_url, "token": ctx.token}
    if ctx.fallback_urls:
        data["api_urls"] = list(ctx.api_urls)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # O_EXCL below: a file left over (with any mode) is never reused
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(data, f, sort_keys=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
