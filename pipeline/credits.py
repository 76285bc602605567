"""The credit table: estimated credits per produced image, by feature and quality.

Shipped as package data (``pipeline/data/credits.yaml``), so an installed wheel reads the same
table as a checkout; a user's own table can be given instead (``load_credit_table(path)``).
The API publishes no per-call prices: these are estimates for ``--dry-run``, ``--max-credits``
and ``--max-total-credits``; the account's real use is ``aiRecord.teamUser.usedCredit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError
from pipeline.models import QUALITIES, Feature, Job

PACKAGE_TABLE = "credits.yaml"


@dataclass(frozen=True)
class CreditTable:
    """Estimated credits per produced image, by feature and quality."""

    per_image: Mapping[str, Mapping[str, int]]
    source: str  # where it came from, for the plan's footnote

    def for_job(self, job: Job) -> int:
        return self.per_image[job.feature.value][job.quality] * job.expected_outputs


def load_credit_table(path: Path | None = None) -> CreditTable:
    """The shipped table, or the one at ``path``; ConfigError naming the bad key if wrong."""
    if path is None:
        text = resources.files("pipeline.data").joinpath(PACKAGE_TABLE).read_text("utf-8")
        return _parse(text, "pipeline/data/credits.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the credit table: {exc.strerror}") from exc
    return _parse(text, str(path))


def _parse(text: str, source: str) -> CreditTable:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    table = data.get("per_image") if isinstance(data, dict) else None
    return CreditTable(_checked(table, source), source)


def _checked(table: Any, source: str) -> dict[str, dict[str, int]]:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: expected per_image: {{FEATURE: {{quality: credits}}}}")
    checked: dict[str, dict[str, int]] = {}
    for feature in Feature:
        row = table.get(feature.value)
        if not isinstance(row, dict):
            raise ConfigError(f"{source}: per_image.{feature.value} is missing")
        checked[feature.value] = {}
        for quality in QUALITIES:
            value = row.get(quality)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                key = f"per_image.{feature.value}.{quality}"
                raise ConfigError(f"{source}: {key} must be a whole number >= 0, got {value!r}")
            checked[feature.value][quality] = value
    return checked
