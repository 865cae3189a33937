"""The canonical dataset's schema: which fields exist, their vocabularies, and provenance.

Index 0 of every field is reserved: padding in list fields, unknown/missing in single fields.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SPLITS = ("train", "test_hot", "test_cold")
STAGES = (1, 2)
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Field:
    """One categorical field: `vocab_size` counts index 0; `length` > 1 marks a padded list."""

    name: str
    vocab_size: int
    length: int = 1


@dataclass
class DatasetSchema:
    user_single: list[Field]
    user_lists: list[Field]
    campaign_fields: list[Field]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def list_lengths(self) -> list[int]:
        return [f.length for f in self.user_lists]

    def to_json(self) -> str:
        return json.dumps({"version": SCHEMA_VERSION, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "schema.json") -> DatasetSchema:
        raw = json.loads(text)
        if raw.get("version") != SCHEMA_VERSION:
            raise ValueError(
                f"{source}: schema version {raw.get('version')!r} is not {SCHEMA_VERSION}; "
                "re-run `metaheac preprocess` with this release"
            )

        def fields(key: str) -> list[Field]:
            return [Field(**f) for f in raw[key]]

        return cls(
            user_single=fields("user_single"),
            user_lists=fields("user_lists"),
            campaign_fields=fields("campaign_fields"),
            provenance=raw.get("provenance", {}),
        )
