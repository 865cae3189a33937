"""Typed preprocessing configuration, with the official processing's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from metaheac.data.errors import OnError

# Every field name of the raw userFeature.data; names outside this list (and the configured ones)
# are reported as unknown.
TENCENT_USER_FIELDS = (
    "uid age gender marriageStatus education consumptionAbility LBS interest1 interest2 interest3 "
    "interest4 interest5 kw1 kw2 kw3 topic1 topic2 topic3 appIdInstall appIdAction ct os carrier house"
).split()


@dataclass
class FieldConfig:
    """Which raw fields become model inputs; list fields are truncated to, then padded to, a length."""

    user_single: list[str] = field(
        default_factory=lambda: [
            "age", "gender", "education", "consumptionAbility", "LBS", "carrier", "house"
        ]
    )  # fmt: skip
    user_lists: dict[str, int] = field(
        default_factory=lambda: {
            "interest1": 10, "interest2": 10, "interest3": 10,
            "kw1": 5, "kw2": 5, "topic1": 5, "topic2": 5,
        }
    )  # fmt: skip
    campaign_fields: list[str] = field(
        default_factory=lambda: [
            "advertiserId", "campaignId", "creativeSize", "adCategoryId", "productId", "productType"
        ]
    )  # fmt: skip
    # campaign fields that methods transferring between campaigns group by, coarse to fine
    hierarchy: list[str] = field(default_factory=lambda: ["adCategoryId", "advertiserId"])
    known_user_fields: list[str] = field(default_factory=lambda: list(TENCENT_USER_FIELDS))


@dataclass
class PreprocessConfig:
    fields: FieldConfig = field(default_factory=FieldConfig)
    cold_threshold: int = 2000  # test campaigns with at most this many seed positives are cold
    test_fraction: float = 0.5  # share of campaigns held out as test campaigns
    seed: int = 2020
    on_error: OnError = "fail"
