"""Every policy knob in one validated config: defaults, then a YAML file, then CORRAL_POLICY_* env."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PolicyName = Literal["corral", "fifo", "sjf", "las"]
POLICY_NAMES: tuple[PolicyName, ...] = ("corral", "fifo", "sjf", "las")


class PolicyConfigError(ValueError):
    """A policy config file that cannot be read as knobs: one line naming the file and the fix."""


class PolicyConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_POLICY_", frozen=True, extra="forbid")

    name: PolicyName = "corral"
    # Ordering (Slurm multifactor-like): score = class value + waited / aging_s_per_point
    #                                           - fair_share_weight × (queue's weighted share).
    aging_s_per_point: float = Field(default=36.0, gt=0)
    fair_share_weight: float = Field(default=1000.0, ge=0)
    usage_half_life_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # How many pending jobs one cycle looks at (Slurm's bf_max_job_test); the rest wait as 'Priority'.
    scan_depth: int = Field(default=1000, ge=1)
    backfill: bool = True
    # A reservation whose start cannot be bounded (the jobs it waits for have no time limit) idles
    # the reserved nodes for an unknown time: take it only once the head job has waited this long.
    # Never (inf) starves a big gang behind small jobs without limits. 30 min, measured on the
    # Philly trace (448 GPUs): first 10,000 jobs, the largest gangs' worst wait 1.0 h instead of
    # 15.7 h; whole trace, p99 wait 84 h instead of 131 h for +1.5% average JCT. It bounds such a
    # gang's wait by 30 min + the longest job running where it reserves.
    reserve_unbounded_after_s: float = Field(default=1800.0, ge=0)
    # Preemption for higher priority classes and for queues reclaiming lent quota.
    preemption: bool = True
    max_preemptions_per_job: int = Field(default=10, ge=0)  # past this a job is no longer a victim
    default_min_runtime_s: float = Field(default=600.0, ge=0)  # protects new starts from churn
    preemption_backoff: float = Field(default=4.0, ge=1.0)  # protection × this per earlier preemption
    max_preemptors_per_cycle: int = Field(default=8, ge=0)
    max_victims: int = Field(default=64, ge=1)
    # Tiresias-style discretized 2D LAS (used by the 'las' policy, and by 'corral' within a class).
    las_thresholds_gpu_s: tuple[float, ...] = (3600.0, 36000.0)
    las_min_runtime_s: float = Field(
        default=60.0, ge=0
    )  # las: a job runs this long before it may lose its GPUs
    service_level_weight: float = Field(default=30000.0, ge=0)  # corral: score points per service level
    service_preemption: bool = True  # corral: long-running jobs yield to waiting short ones

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> PolicyConfig:
        """Defaults < the `policy:` mapping (or whole document) of a YAML file < env < overrides.

        A file that cannot be read, is not YAML, is not a mapping or names an unknown knob raises
        PolicyConfigError; a knob's bad value raises pydantic's ValidationError naming the knob.
        """
        data: dict[str, Any] = {} if path is None else cls._read(Path(path))
        from_env = cls()  # reads CORRAL_POLICY_* variables; they win over the file
        data.update({name: getattr(from_env, name) for name in from_env.model_fields_set})
        data.update(overrides)
        return cls(**data)

    @classmethod
    def _read(cls, path: Path) -> dict[str, Any]:
        try:
            text = path.read_text(encoding="utf-8")
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
        unknown = sorted(str(k) for k in section if k not in cls.model_fields)
        if unknown:
            raise PolicyConfigError(
                f"{path}: unknown policy knob {unknown[0]!r}; the knobs are {', '.join(cls.model_fields)}"
            )
        return dict(section)
