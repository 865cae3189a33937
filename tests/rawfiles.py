"""Tiny hand-written raw Tencent files for parser and preprocessing tests."""

from __future__ import annotations

from pathlib import Path

# The official processed pickles, a real sample (shared/data); the tests that need it skip without it.
SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/metaheac-processed-sample"
USERS = [
    "uid 11|age 4|gender 2|LBS 950|interest1 93 70 77|kw1 5 6 7 8 9 10 11|carrier 1|house 1",
    "uid 12|age 3|gender 1|marriageStatus 2 3|education 7|interest2 4",
    "uid 13|age 4|ct 3 1|os 2|topic1 9",
    "uid 14|gender 1",
    "uid 15|age 2|interest1 70",
]
ADS = ["aid,advertiserId,campaignId,creativeId,creativeSize,adCategoryId,productId,productType",
       "100,1,2,3,4,5,6,7", "200,1,3,3,4,5,6,7", "300,2,3,3,4,6,6,7"]
STAGE1 = ["aid,uid,label", "100,11,1", "100,12,-1", "200,13,1", "200,14,-1", "300,15,1", "300,11,-1"]
STAGE2 = ["100,13,1", "200,11,-1", "200,12,1", "300,12,1"]


def write_raw(folder: Path, users: list[str] | None = None, stage1: list[str] | None = None,
              stage2: list[str] | None = None, newline: str = "\n", ads: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("userFeature.data", users or USERS), ("adFeature.csv", ads or ADS),
                        ("train.csv", stage1 or STAGE1), ("test1_truth.csv", stage2 or STAGE2)):
        (folder / name).write_text("".join(line + newline for line in lines))
    return folder
