"""The canonical dataset's schema: which fields exist, their vocabularies, and provenance.

Index 0 of every field is reserved: padding in list fields, unknown/missing in single fields.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from metaheac.data.errors import InputError, quote

SPLITS = ("train", "test_hot", "test_cold")
STAGES = (1, 2)
SCHEMA_VERSION = 1
# A dataset written before the schema named its campaign hierarchy: the Tencent fields, coarse to fine.
LEGACY_HIERARCHY = ("adCategoryId", "advertiserId")


@dataclass(frozen=True)
class Field:
    """One categorical field: `vocab_size` counts index 0; `length` > 1 marks a padded list."""

    name: str
    vocab_size: int
    length: int = 1


@dataclass
class DatasetSchema:
    """`hierarchy`: campaign field names, coarse to fine (e.g. category, then advertiser), that methods
    transferring between campaigns group by; it may be empty."""

    user_single: list[Field]
    user_lists: list[Field]
    campaign_fields: list[Field]
    provenance: dict[str, Any] = field(default_factory=dict)
    hierarchy: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [f.name for f in self.campaign_fields]
        unknown = [h for h in self.hierarchy if h not in names]
        if unknown:
            raise InputError(f"schema: hierarchy field {quote(unknown[0], 60)} is not a campaign field "
                             f"(campaign fields: {', '.join(names)})")

    @property
    def list_lengths(self) -> list[int]:
        return [f.length for f in self.user_lists]

    def to_json(self) -> str:
        return json.dumps({"version": SCHEMA_VERSION, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "schema.json") -> DatasetSchema:
        """The schema; an InputError naming `source` when the text is not one."""
        try:
            raw = json.loads(text)
        except ValueError as error:  # also UnicodeDecodeError
            raise InputError(f"{source}: not JSON ({str(error)[:120]}): re-run `metaheac preprocess`") from None
        version = raw.get("version") if isinstance(raw, dict) else None
        if version != SCHEMA_VERSION:
            raise InputError(
                f"{source}: schema version {quote(str(version), 40)} is not {SCHEMA_VERSION}; "
                "re-run `metaheac preprocess` with this release"
            )

        def fields(key: str, lists: bool) -> list[Field]:
            try:
                parsed = [Field(**f) for f in raw[key]]
            except (KeyError, TypeError) as error:
                raise InputError(f"{source}: malformed {key!r} ({quote(str(error), 120)})") from None
            for f in parsed:
                if not (isinstance(f.vocab_size, int) and isinstance(f.length, int) and f.vocab_size >= 1
                        and (f.length >= 1 if lists else f.length == 1)):
                    raise InputError(f"{source}: field {quote(str(f.name), 60)} has vocab_size "
                                     f"{quote(str(f.vocab_size), 40)} and length {quote(str(f.length), 40)}")
            return parsed

        campaign_fields = fields("campaign_fields", False)
        names = [f.name for f in campaign_fields]
        hierarchy = raw.get("hierarchy", [h for h in LEGACY_HIERARCHY if h in names])
        if not (isinstance(hierarchy, list) and all(isinstance(h, str) for h in hierarchy)):
            raise InputError(f"{source}: malformed 'hierarchy' (a list of campaign field names)")
        return cls(
            user_single=fields("user_single", False),
            user_lists=fields("user_lists", True),
            campaign_fields=campaign_fields,
            provenance=raw.get("provenance", {}),
            hierarchy=hierarchy,
        )
