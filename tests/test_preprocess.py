import json

import numpy as np
import pandas as pd
import pytest

from metaheac.data.build import SeenUids
from metaheac.data.config import PreprocessConfig
from metaheac.data.dataset import load_campaign_frame, load_schema
from metaheac.data.errors import InputError
from metaheac.data.loading import load_features, load_rows
from metaheac.data.official import import_official
from metaheac.data.preprocess import preprocess_raw
from metaheac.runtime import storage
from tests.rawfiles import SAMPLE, STAGE1, STAGE2, USERS, write_raw


def config(**changes) -> PreprocessConfig:
    return PreprocessConfig(cold_threshold=1, **changes)


def test_raw_to_canonical(tmp_path):
    provenance = preprocess_raw(str(write_raw(tmp_path / "raw")), str(tmp_path / "ds"), config(), progress=False)
    features = load_features(str(tmp_path / "ds"))
    assert features.users.uid.tolist() == [11, 12, 13, 14, 15]
    campaigns = load_campaign_frame(str(tmp_path / "ds"))
    assert campaigns["aid"].tolist() == [100, 200, 300]  # campaign index follows aid
    assert campaigns["seed_positives"].tolist() == [1, 1, 1]
    assert sorted(campaigns["split"]) == ["test_cold", "test_cold", "train"]  # round(3 * 0.5) = 2 test campaigns
    stage1_rows = sum(len(load_rows(str(tmp_path / "ds"), s, 1)) for s in ("train", "test_hot", "test_cold"))
    assert stage1_rows == len(STAGE1) - 1
    assert provenance["counts"]["users"] == 5
    schema = load_schema(str(tmp_path / "ds"))
    assert schema.provenance["config"]["cold_threshold"] == 1
    assert [f.vocab_size for f in schema.user_single][:2] == [4, 3]  # age 4,3,2 + 0; gender 2,1 + 0


def test_split_is_seeded_and_cold_hot_follows_threshold(tmp_path):
    raw = write_raw(tmp_path / "raw")
    splits = []
    for run, seed in enumerate((1, 1, 7)):
        preprocess_raw(str(raw), str(tmp_path / f"ds{run}"), config(seed=seed, test_fraction=1.0), progress=False)
        splits.append(load_campaign_frame(str(tmp_path / f"ds{run}"))["split"].tolist())
    assert splits[0] == splits[1] == ["test_cold"] * 3
    preprocess_raw(str(raw), str(tmp_path / "hot"), PreprocessConfig(cold_threshold=0, test_fraction=1.0),
                   progress=False)
    assert load_campaign_frame(str(tmp_path / "hot"))["split"].tolist() == ["test_hot"] * 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users": [*USERS, "uid 11|age 2"]}, "userFeature.data line 6: uid 11 appeared before"),
        ({"stage1": [*STAGE1, "999,11,1"]}, "train.csv line 8: aid 999 is not in adFeature.csv"),
        ({"stage2": [*STAGE2, "100,77,1"]}, "test1_truth.csv line 5: uid 77 is not in userFeature.data"),
        ({"stage1": [*STAGE1[:5], "300,15,-1", "300,11,-1"]},
         "campaign aid 300: no positive seed rows in train.csv"),
    ],
)
def test_bad_rows_fail_with_location_or_are_skipped_and_counted(tmp_path, change, message):
    raw = write_raw(tmp_path / "raw", **change)
    with pytest.raises(InputError, match=message):
        preprocess_raw(str(raw), str(tmp_path / "ds"), config(), progress=False)
    assert not (tmp_path / "ds").exists()  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds")]  # no staging left behind
    provenance = preprocess_raw(str(raw), str(tmp_path / "ds"), config(on_error="skip"), progress=False)
    assert sum(provenance["problems"]["skipped"].values()) == 1
    assert message in provenance["problems"]["examples"][0]


def test_missing_file_and_crlf(tmp_path):
    raw = write_raw(tmp_path / "raw", newline="\r\n")
    preprocess_raw(str(raw), str(tmp_path / "ds"), config(), progress=False)
    (raw / "train.csv").unlink()
    with pytest.raises(InputError, match=r"missing input file .*train.csv"):
        preprocess_raw(str(raw), str(tmp_path / "ds2"), config(), progress=False)


def test_failure_keeps_the_previous_dataset(tmp_path):
    raw = write_raw(tmp_path / "raw")
    preprocess_raw(str(raw), str(tmp_path / "ds"), config(), progress=False)
    before = storage.read_text(str(tmp_path / "ds" / "schema.json"))
    write_raw(tmp_path / "raw", users=[*USERS, "uid x"])
    with pytest.raises(InputError):
        preprocess_raw(str(raw), str(tmp_path / "ds"), config(), progress=False)
    assert storage.read_text(str(tmp_path / "ds" / "schema.json")) == before


def test_gcs_in_and_out(tmp_path, gcs_bucket):
    raw = write_raw(tmp_path / "raw")
    for path in raw.iterdir():
        storage.upload(path, f"gs://{gcs_bucket}/raw/{path.name}")
    preprocess_raw(f"gs://{gcs_bucket}/raw", f"/gcs/{gcs_bucket}/ds", config(), progress=False)
    assert storage.is_complete(f"gs://{gcs_bucket}/ds")
    features = load_features(f"gs://{gcs_bucket}/ds")
    assert len(features.users) == 5
    campaigns = load_campaign_frame(f"gs://{gcs_bucket}/ds")
    (train,) = campaigns.index[campaigns["split"] == "train"]
    assert len(load_rows(f"gs://{gcs_bucket}/ds", "train", 1, campaigns=[train])) == 2


def test_missing_bucket_is_one_line(gcs_server):
    with pytest.raises(OSError, match="bucket 'no-such-bucket-x' does not exist"):
        preprocess_raw("gs://no-such-bucket-x/raw", "/tmp/unused", config(), progress=False)


def test_official_pickles_need_opt_in(tmp_path):
    with pytest.raises(InputError, match="--allow-pickle"):
        import_official(str(SAMPLE), str(tmp_path / "ds"), PreprocessConfig())


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"no real official sample at {SAMPLE}")
def test_official_sample_imports(tmp_path):
    with pytest.warns(UserWarning, match="a pickle runs code"):
        provenance = import_official(str(SAMPLE), str(tmp_path / "ds"), PreprocessConfig(), allow_pickle=True)
    features = load_features(str(tmp_path / "ds"))
    campaigns = load_campaign_frame(str(tmp_path / "ds"))
    rows = load_rows(str(tmp_path / "ds"), "train", 2)
    assert len(rows) == 5000 and rows.label.min() == 1
    assert len(campaigns) == 86 and set(campaigns["split"]) == {"train"}
    assert provenance["counts"]["users"] == len(features.users) <= 5000
    schema = load_schema(str(tmp_path / "ds"))
    kw1 = next(f for f in schema.user_lists if f.name == "kw1")
    offset = sum(f.length for f in schema.user_lists[:3])
    assert kw1.length == 5 and kw1.vocab_size == int(features.users.lists[:, offset : offset + 5].max()) + 1
    # every imported row carries its original user: ids shifted by one, padding past the length
    frame = pd.read_pickle(SAMPLE / "train_stage2.pkl").sort_values("aid", kind="stable")  # rows sort by campaign
    ours = features.users.lists[rows.user][:, offset : offset + 5].numpy()
    theirs = np.stack(frame["kw1"].to_numpy()) + 1
    theirs[np.arange(5) >= frame["kw1_length"].to_numpy()[:, None]] = 0
    assert (ours == theirs).all()
    age = [f.name for f in schema.user_single].index("age")
    assert (features.users.single[rows.user][:, age].numpy() == frame["age"].to_numpy() + 1).all()
    json.dumps(provenance)


def test_campaign_vocab_maps_raw_ad_values_to_the_stored_indexes(tmp_path):
    from metaheac.online.expand import load_campaign_vocab

    preprocess_raw(str(write_raw(tmp_path / "raw")), str(tmp_path / "ds"), config(), progress=False)
    vocab = load_campaign_vocab(str(tmp_path / "ds"))
    campaigns = load_campaign_frame(str(tmp_path / "ds"))
    # adFeature.csv: aid 300 has advertiserId 2 and adCategoryId 6; the others 1 and 5
    row = campaigns[campaigns["aid"] == 300].iloc[0]
    assert vocab["advertiserId"]["2"] == row["advertiserId"] != vocab["advertiserId"]["1"]
    assert vocab["adCategoryId"]["6"] == row["adCategoryId"]


def test_negative_cold_threshold_splits_test_campaigns_at_their_median(tmp_path):
    stage1 = [*STAGE1, "200,11,1", "200,12,1", "300,12,1"]  # seed positives: aid 100: 1, 200: 3, 300: 2
    raw = write_raw(tmp_path / "raw", stage1=stage1)
    provenance = preprocess_raw(str(raw), str(tmp_path / "ds"), PreprocessConfig(cold_threshold=-1, test_fraction=1.0),
                                progress=False)
    assert provenance["cold_threshold"] == 2
    campaigns = load_campaign_frame(str(tmp_path / "ds"))
    assert dict(zip(campaigns["aid"], campaigns["split"], strict=True)) == {
        100: "test_cold", 200: "test_hot", 300: "test_cold"}


def test_seen_uids_finds_a_uid_of_any_earlier_batch() -> None:
    """The duplicate check against every uid kept before (sorted runs merged as they grow) agrees with a set,
    and gives the kept uids back in table order."""
    rng = np.random.default_rng(0)
    seen, naive, order = SeenUids(), set(), []
    for size in rng.integers(0, 60, 80):
        batch = rng.choice(3000, size, replace=False).astype(np.int64)
        found = seen.contains(batch)
        assert found.tolist() == [u in naive for u in batch.tolist()]
        seen.add(batch[~found])
        naive.update(batch[~found].tolist())
        order += batch[~found].tolist()
    assert len(seen) == len(naive) > 1000 and seen.to_numpy().tolist() == order
    assert len(seen.runs) <= 12  # runs of doubling sizes, not one a batch
