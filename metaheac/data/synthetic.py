"""Synthetic data in the raw Tencent Look-alike format, with structure a look-alike model can learn.

The files are the contest's raw files (`userFeature.data`, `adFeature.csv`, `train.csv`,
`test1_truth.csv`), so the demo and the tests run the same streaming parser as real data.

Planted structure:
- Users: K latent interest topics; each user keeps a sparse mix of `topics_per_user` topics
  (Dirichlet weights with small concentration, renormalized). Each id of interest1..3, interest5,
  kw1..3 and topic1..3 comes, with the field's `signal` probability, from the pool of ids owned by
  a topic drawn from the user's mix, else from the whole vocabulary (Zipf-like popularity both
  ways). age, gender, education, consumptionAbility, carrier, LBS and house depend on one topic
  drawn from the mix. interest4, appId*, ct, os and marriageStatus are pure noise.
- Campaigns (aid): each belongs to a category with a N(0, 1) profile over topics; its own profile
  is the category's, plus its advertiser's N(0, `advertiser_effect`) profile (advertisers of a
  category share audiences), plus N(0, `campaign_perturbation`) noise of its own, so campaigns of a
  category share structure and each still needs adapting. advertiserId, productId, productType and
  creativeSize follow the category.
- Label of (user, campaign): Bernoulli(sigmoid(affinity_scale * sum_k w_uk profile_ck
  + per-category effects of age, gender, education, consumptionAbility
  + `region_effect` if the user's LBS is one of the campaign's own `_CAMPAIGN_REGIONS` regions
  + campaign bias)); the bias is solved per campaign to hit its positive rate (`positive_rate` times
  lognormal noise). The regions are structure only the campaign's own seeds reveal.
- `SETTINGS` names presets: "transfer" (campaigns close to their category and advertiser: transfer
  carries cold campaigns) and "specific" (campaigns far from them, with strong own regions:
  per-campaign fit carries hot ones).
- Candidates: a `targeted_fraction` of each campaign's rows are users interested in a topic the
  campaign likes, the rest uniform users. Stage-1 sizes are lognormal (heavy tail) so that, at the
  median seed-positive count (`suggested_cold_threshold`), half the campaigns are cold, half hot.
  Stage-2 rows are the same candidate draw, each row held out with odds `stage2_fraction`.

Deterministic for a config: every random stream is keyed by (seed, purpose[, chunk]).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from metaheac.runtime import storage

USER_FILE = "userFeature.data"
AD_FILE = "adFeature.csv"
TRAIN_FILE = "train.csv"
TEST_FILE = "test1_truth.csv"
AD_COLUMNS = (
    "aid", "advertiserId", "campaignId", "creativeId", "creativeSize", "adCategoryId", "productId",
    "productType",
)  # fmt: skip
# Field order of a userFeature.data line, as in the contest files.
LINE_ORDER = (
    "uid", "age", "gender", "marriageStatus", "education", "consumptionAbility", "LBS",
    "interest1", "interest2", "interest3", "interest4", "interest5", "kw1", "kw2", "kw3",
    "topic1", "topic2", "topic3", "appIdInstall", "appIdAction", "ct", "os", "carrier", "house",
)  # fmt: skip


@dataclass
class SyntheticConfig:
    users: int = 20_000  # lines of userFeature.data
    campaigns: int = 64  # aids in adFeature.csv
    categories: int = 8  # adCategoryId values; campaigns of one category share a topic profile
    topics: int = 16  # latent interest topics K
    mean_rows_per_campaign: int = 1_500  # mean stage-1 rows of a campaign (before de-duplication and a cap)
    rows_sigma: float = 1.0  # lognormal sigma of stage-1 rows per campaign: the heavy tail
    stage2_fraction: float = 0.4  # stage-2 rows per stage-1 row, in every campaign
    positive_rate: float = 0.05  # median campaign positive rate
    topics_per_user: int = 3  # topics kept in a user's sparse latent mix
    dirichlet_alpha: float = 0.3  # concentration of the user mix: small = one dominant topic
    affinity_scale: float = 2.0  # logit weight of the user x campaign topic affinity
    campaign_perturbation: float = 0.6  # std of a campaign's profile around its category's
    static_effect: float = 0.25  # std of the per-category logit effects of age, gender, ...
    targeted_fraction: float = 0.5  # share of candidates drawn from the campaign's liked topics
    advertiser_effect: float = 0.0  # std of an advertiser's profile, shared by its campaigns
    region_effect: float = 0.0  # logit boost of a user in one of the campaign's own regions
    chunk_users: int = 100_000  # users written at once: bounds memory (a new value draws new id lists)
    seed: int = 2020

    def __post_init__(self) -> None:
        checks = {
            "users >= 100": self.users >= 100,
            "campaigns >= categories >= 1": self.campaigns >= self.categories >= 1,
            "topics >= topics_per_user >= 1": self.topics >= self.topics_per_user >= 1,
            "mean_rows_per_campaign >= 1": self.mean_rows_per_campaign >= 1,
            "stage2_fraction > 0": self.stage2_fraction > 0,
            "0 < positive_rate < 0.5": 0 < self.positive_rate < 0.5,
            "dirichlet_alpha > 0": self.dirichlet_alpha > 0,
            "0 <= targeted_fraction <= 1": 0 <= self.targeted_fraction <= 1,
            "advertiser_effect, region_effect >= 0": min(self.advertiser_effect, self.region_effect) >= 0,
            "chunk_users >= 1": self.chunk_users >= 1,
            "seed >= 0": self.seed >= 0,
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"SyntheticConfig: need {', '.join(failed)}")


@dataclass(frozen=True)
class Setting:
    """A named generator preset: how much of a campaign's audience its category and advertiser share."""

    campaign_perturbation: float
    advertiser_effect: float
    region_effect: float

    def config(self, **changes: Any) -> SyntheticConfig:
        return SyntheticConfig(**{**asdict(self), **changes})


SETTINGS = {
    "transfer": Setting(campaign_perturbation=0.3, advertiser_effect=0.5, region_effect=0.5),
    "specific": Setting(campaign_perturbation=1.0, advertiser_effect=0.3, region_effect=1.5),
}


def setting_config(name: str, **changes: Any) -> SyntheticConfig:
    """The config of a named setting ("" : the plain defaults) with `changes`."""
    if name and name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}: choose one of {', '.join(SETTINGS)}")
    return SETTINGS[name].config(**changes) if name else SyntheticConfig(**changes)


@dataclass(frozen=True)
class _ListField:
    name: str
    vocab: int  # distinct ids
    id_space: int  # the ids are a random subset of 1..id_space
    max_len: int
    mean_len: float  # before removing repeated ids
    presence: float  # share of users who have the field
    signal: float  # share of ids drawn from the user's topics; 0 = pure noise


# Vocabularies and lengths after the contest data (kw/topic/appId ids are sparse in a large space).
_LIST_FIELDS = {
    f.name: f
    for f in (
        _ListField("marriageStatus", 10, 15, 2, 1.3, 1.0, 0.0),
        _ListField("interest1", 122, 122, 30, 12, 0.95, 0.75),
        _ListField("interest2", 82, 82, 20, 6, 0.9, 0.7),
        _ListField("interest3", 10, 10, 5, 2, 0.05, 0.5),
        _ListField("interest4", 10, 10, 5, 2, 0.05, 0.0),
        _ListField("interest5", 136, 136, 30, 12, 0.75, 0.4),
        _ListField("kw1", 20_000, 800_000, 10, 5, 0.95, 0.6),
        _ListField("kw2", 20_000, 800_000, 10, 5, 0.95, 0.6),
        _ListField("kw3", 5_000, 800_000, 10, 3, 0.05, 0.3),
        _ListField("topic1", 5_000, 10_000, 10, 5, 0.95, 0.6),
        _ListField("topic2", 5_000, 10_000, 10, 5, 0.95, 0.6),
        _ListField("topic3", 2_000, 10_000, 10, 3, 0.05, 0.3),
        _ListField("appIdInstall", 20_000, 650_000, 20, 6, 0.03, 0.0),
        _ListField("appIdAction", 5_000, 6_300, 10, 3, 0.03, 0.0),
        _ListField("ct", 4, 4, 3, 1.5, 1.0, 0.0),
        _ListField("os", 2, 2, 2, 1.1, 1.0, 0.0),
    )
}
# Single-valued fields drawn from a per-topic categorical: (values 1..n, Dirichlet concentration).
_CATEGORICAL = {
    "age": (5, 1.0), "gender": (2, 1.0), "education": (7, 1.0), "consumptionAbility": (2, 1.0),
    "carrier": (3, 5.0),
}  # fmt: skip
_LABEL_FIELDS = ("age", "gender", "education", "consumptionAbility")  # statics that move labels
# LBS: 900 regions in 1..1000; each topic has 8 home regions, where 30% of its users live.
_LBS_REGIONS, _LBS_SPACE, _LBS_HOMES, _LBS_HOME_SHARE = 900, 1_000, 8, 0.3
_CAMPAIGN_REGIONS = 60  # LBS values where a campaign's region effect applies
_TARGET_MIN_WEIGHT = 0.2  # a user counts as interested in a topic from this mix weight on
_MIN_EXPECTED_SEEDS = 10  # stage-1 rows of a campaign cover at least this many expected positives
_SLOTS_PER_ID = 16  # sampling tables hold about this many slots per id
_MAX_ROW_SHARE = 0.5  # candidate draws of one campaign stay under this share of the users
_CREATIVE_SIZES = np.array([20, 22, 35, 42, 53, 59, 60, 64, 65, 79, 86, 91, 93, 100, 102, 105, 109])
_PRODUCT_TYPES = np.array([4, 6, 9, 11])
_WORKERS = 2  # threads building user blocks
_CSV_CHUNK = 1_000_000  # rows per text block: keeps every arrow string array far below 2 GiB


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _draw_topic(u: np.ndarray, topics: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One topic per row from that row's mix, given one uniform `u` per row."""
    slot = (u[:, None] > np.cumsum(weights, axis=1)[:, :-1]).sum(axis=1)
    return topics[np.arange(len(u)), slot]


def _strings(name: str, values: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    """`name value` per row; null where `missing` (the field is left out of the line)."""
    text = pc.cast(pa.array(values, mask=missing), pa.string())
    return pc.binary_join_element_wise(name, text, " ")


def _write_lines(fh: BinaryIO, lines: pa.Array) -> None:
    block = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "\n")
    fh.write(block[0].as_buffer())
    fh.write(b"\n")


@dataclass
class _Vocab:
    """One list field's ids, how popular each is and which topic owns it, as sampling tables."""

    ids: np.ndarray  # raw ids
    noise: np.ndarray  # slot table over indexes into ids, by popularity
    topical: np.ndarray  # per-topic slot tables over indexes into ids, side by side
    start: np.ndarray  # where topic z's table starts in `topical`
    size: np.ndarray  # its length

    @classmethod
    def build(cls, spec: _ListField, topics: int, rng: np.random.Generator) -> _Vocab:
        v = spec.vocab
        ids = np.sort(rng.choice(spec.id_space, v, replace=False)) + 1
        popularity = (rng.permutation(v) + 1.0) ** -0.8  # Zipf-like
        # Slot tables: an id fills about prob * slots cells (at least one); a uniform cell is a draw.
        noise = np.repeat(
            np.arange(v), 1 + (popularity / popularity.sum() * _SLOTS_PER_ID * v).astype(np.int64)
        )
        if v >= topics:  # each id belongs to one topic
            members, owner = rng.permutation(v), np.arange(v) % topics
        else:  # too few ids: topics share them
            members, owner = rng.permutation(v)[np.arange(topics) % v], np.arange(topics)
        order = np.argsort(owner, kind="stable")
        members, owner = members[order], owner[order]
        pool = np.bincount(owner, minlength=topics)
        prob = popularity[members] / np.bincount(owner, popularity[members], topics)[owner]
        slots = 1 + (prob * _SLOTS_PER_ID * pool[owner]).astype(np.int64)
        size = np.bincount(owner, slots, topics).astype(np.int64)
        return cls(ids, noise, np.repeat(members, slots), np.cumsum(size) - size, size)

    def sample(
        self,
        rng: np.random.Generator,
        row: np.ndarray,
        signal: float,
        topics: np.ndarray,
        weights: np.ndarray,
    ) -> np.ndarray:
        """Indexes into `ids` for entries of users `row`: from a topic of the user's w.p. `signal`."""
        index = self.noise[rng.integers(0, len(self.noise), len(row))]
        if signal > 0:
            topical = np.nonzero(rng.random(len(row)) < signal)[0]
            users = row[topical]
            z = _draw_topic(rng.random(len(topical)), topics[users], weights[users])
            index[topical] = self.topical[
                self.start[z] + (rng.random(len(topical)) * self.size[z]).astype(np.int64)
            ]
        return index


def _first_occurrences(index: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Mask of the entries that hold the first occurrence of their id in their user's list.

    Entries are users' lists back to back. Each user with entries gets a row of (id, position)
    keys, sorted; a key whose id repeats the one before it is a later occurrence.
    """
    rows = length[length > 0]
    if rows.size == 0:
        return np.ones(0, dtype=bool)
    width = int(rows.max())
    row = np.repeat(np.arange(len(rows)), rows)
    col = np.arange(len(row)) - np.repeat(np.cumsum(rows) - rows, rows)
    pad = np.iinfo(np.int64).max  # sorts after every real key
    keys = np.full((len(rows), width), pad)
    keys[row, col] = index * width + col
    keys.sort(axis=1)
    later = np.zeros(keys.shape, dtype=bool)
    later[:, 1:] = (keys[:, 1:] != pad) & (keys[:, 1:] // width == keys[:, :-1] // width)
    repeated = np.zeros(keys.shape, dtype=bool)
    repeated[np.nonzero(later)[0], keys[later] % width] = True
    return ~repeated[row, col]


def _list_strings(
    spec: _ListField, vocab: _Vocab, rng: np.random.Generator, topics: np.ndarray, weights: np.ndarray
) -> pa.Array:
    n = len(topics)
    length = np.minimum(1 + rng.poisson(spec.mean_len - 1, n), spec.max_len)
    length[rng.random(n) >= spec.presence] = 0
    row = np.repeat(np.arange(n), length)  # one entry per drawn id, users in order
    index = vocab.sample(rng, row, spec.signal, topics, weights)
    keep = _first_occurrences(index, length)
    counts = np.bincount(row[keep], minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    values = pc.cast(pa.array(vocab.ids[index[keep]]), pa.string())
    lists = pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(counts == 0))
    return pc.binary_join_element_wise(spec.name, pc.binary_join(lists, " "), " ")


@dataclass
class _Users:
    uid: np.ndarray  # int64 [n], unique, in file order
    topics: np.ndarray  # int64 [n, topics_per_user], by decreasing weight
    weights: np.ndarray  # float64 [n, topics_per_user], rows sum to 1
    single: dict[str, np.ndarray]  # single-valued fields; 0 = missing


def _users(config: SyntheticConfig, rng: np.random.Generator) -> _Users:
    n, k = config.users, config.topics
    space = max(10**8, 100 * n)
    draw = rng.integers(1, space, size=n + n // 10 + 100)  # spare draws cover repeated uids
    _, first = np.unique(draw, return_index=True)
    uid = draw[np.sort(first)][:n]

    mix = rng.gamma(config.dirichlet_alpha, size=(n, k))
    topics = np.argsort(-mix, axis=1)[:, : config.topics_per_user]
    weights = np.take_along_axis(mix, topics, axis=1) + 1e-12  # guards a row of all-zero gammas
    weights /= weights.sum(axis=1, keepdims=True)

    z = _draw_topic(rng.random(n), topics, weights)
    single: dict[str, np.ndarray] = {}
    for name, (values, concentration) in _CATEGORICAL.items():
        cdf = np.cumsum(rng.dirichlet(np.full(values, concentration), size=k), axis=1)[z]
        single[name] = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), values - 1) + 1
    regions = np.sort(rng.choice(_LBS_SPACE, _LBS_REGIONS, replace=False)) + 1
    homes = rng.integers(0, _LBS_REGIONS, size=(k, _LBS_HOMES))[z, rng.integers(0, _LBS_HOMES, n)]
    at_home = rng.random(n) < _LBS_HOME_SHARE
    single["LBS"] = regions[np.where(at_home, homes, rng.integers(0, _LBS_REGIONS, n))]
    single["house"] = (rng.random(n) < rng.uniform(0.15, 0.45, k)[z]).astype(np.int64)
    return _Users(uid, topics, weights, single)


@dataclass
class _Campaigns:
    aid: np.ndarray  # raw aid per campaign index
    category: np.ndarray  # category index per campaign
    profile: np.ndarray  # float [campaigns, topics]
    shared: np.ndarray  # the part of `profile` its category and advertiser give: without its own perturbation
    rate: np.ndarray  # target positive rate
    draws: np.ndarray  # candidate draws (both stages), before de-duplication
    ad_rows: list[str]  # adFeature.csv lines
    regions: np.ndarray  # [campaigns, _CAMPAIGN_REGIONS]: LBS values of the campaign's own regions


def _campaigns(config: SyntheticConfig, rng: np.random.Generator) -> _Campaigns:
    c, g, k = config.campaigns, config.categories, config.topics
    category = rng.permutation(np.arange(c) % g)
    by_category = rng.normal(size=(g, k))[category]
    profile = by_category + config.campaign_perturbation * rng.normal(size=(c, k))
    rate = np.clip(config.positive_rate * rng.lognormal(0.0, 0.5, c), 0.01, 0.3)

    mu = np.log(config.mean_rows_per_campaign) - config.rows_sigma**2 / 2  # lognormal with that mean
    stage1 = np.maximum(rng.lognormal(mu, config.rows_sigma, c), _MIN_EXPECTED_SEEDS / rate)
    draws = np.minimum(np.round(stage1 * (1 + config.stage2_fraction)), _MAX_ROW_SHARE * config.users)

    aid = rng.choice(20 * c, c, replace=False) + 1
    category_id = (rng.choice(300, g, replace=False) + 1)[category]
    advertisers = rng.choice(100_000, (g, 3), replace=False) + 1
    products = rng.choice(20_000, (g, 2), replace=False) + 1
    usual_size = rng.choice(_CREATIVE_SIZES, g)[category]
    usual_type = rng.choice(_PRODUCT_TYPES, g)[category]
    columns = {
        "aid": aid,
        "advertiserId": advertisers[category, rng.integers(0, 3, c)],
        "campaignId": rng.choice(50_000, c, replace=False) + 1,
        "creativeId": rng.choice(1_000_000, c, replace=False) + 1,
        "creativeSize": np.where(rng.random(c) < 0.7, usual_size, rng.choice(_CREATIVE_SIZES, c)),
        "adCategoryId": category_id,
        "productId": products[category, rng.integers(0, 2, c)],
        "productType": np.where(rng.random(c) < 0.9, usual_type, rng.choice(_PRODUCT_TYPES, c)),
    }
    ad_rows = [",".join(str(columns[name][i]) for name in AD_COLUMNS) for i in range(c)]
    # Own stream: the settings' extra structure leaves every default draw as it was.
    extra = _rng(config.seed, 7)
    advertiser = np.searchsorted(np.unique(columns["advertiserId"]), columns["advertiserId"])
    by_advertiser = config.advertiser_effect * extra.normal(size=(advertiser.max() + 1, k))[advertiser]
    regions = extra.random((c, _LBS_SPACE + 1)).argsort(axis=1)[:, :_CAMPAIGN_REGIONS]
    return _Campaigns(aid, category, profile + by_advertiser, by_category + by_advertiser, rate,
                      draws.astype(np.int64), ad_rows, regions)


@dataclass
class _Rows:
    campaign: np.ndarray  # campaign index
    user: np.ndarray  # user index
    stage2: np.ndarray  # bool
    prob: np.ndarray  # true P(label = 1)
    label: np.ndarray  # bool
    static_effects: dict[str, np.ndarray]  # per label field: its logit effect per (category, value)


def _rows(config: SyntheticConfig, users: _Users, camps: _Campaigns, rng: np.random.Generator) -> _Rows:
    n, k = config.users, config.topics
    campaign = np.repeat(np.arange(config.campaigns), camps.draws)
    # Targeted candidates: a topic the campaign likes, then a user interested in it.
    interested = users.weights >= _TARGET_MIN_WEIGHT
    interested[:, 0] = True  # everyone is interested in their dominant topic
    pair_topic, pair_user = users.topics[interested], np.nonzero(interested)[0]
    pool = pair_user[np.argsort(pair_topic, kind="stable")]
    pool_size = np.bincount(pair_topic, minlength=k)
    pool_start = np.cumsum(pool_size) - pool_size
    liked = np.exp(2.0 * camps.profile)
    liked_cdf = np.cumsum(liked / liked.sum(axis=1, keepdims=True), axis=1)
    liked_cdf[:, -1] = 1.0
    # Campaign c's topics fill (c, c + 1] of one sorted array: one search serves every campaign.
    flat = (np.arange(config.campaigns)[:, None] + liked_cdf).ravel()
    z = np.searchsorted(flat, campaign + rng.random(len(campaign)), side="right") % k
    pick = np.minimum(
        pool_start[z] + (rng.random(len(campaign)) * pool_size[z]).astype(np.int64), len(pool) - 1
    )
    targeted = (rng.random(len(campaign)) < config.targeted_fraction) & (pool_size[z] > 0)
    user = np.where(targeted, pool[pick], rng.integers(0, n, len(campaign)))

    key = np.unique(campaign * n + user)  # each (aid, uid) at most once
    campaign, user = key // n, key % n
    stage2 = rng.random(len(key)) < config.stage2_fraction / (1 + config.stage2_fraction)

    logit = config.affinity_scale * _affinity(users, camps.profile, campaign, user)
    category = camps.category[campaign]
    static_effects = {}
    for name in _LABEL_FIELDS:
        effects = config.static_effect * rng.normal(size=(config.categories, _CATEGORICAL[name][0] + 1))
        logit += effects[category, users.single[name][user]]
        static_effects[name] = effects
    if config.region_effect:
        mine = np.zeros((config.campaigns, _LBS_SPACE + 1), dtype=bool)
        mine[np.arange(config.campaigns)[:, None], camps.regions] = True
        logit += config.region_effect * mine[campaign, users.single["LBS"][user]]
    # Bisection on each campaign's bias until its mean probability is its target rate.
    rows_of = np.bincount(campaign, minlength=config.campaigns)
    low, high = np.full(config.campaigns, -30.0), np.full(config.campaigns, 30.0)
    for _ in range(30):
        mid = (low + high) / 2
        mean = np.bincount(campaign, _sigmoid(logit + mid[campaign]), config.campaigns) / np.maximum(
            rows_of, 1
        )
        over = mean > camps.rate
        high, low = np.where(over, mid, high), np.where(over, low, mid)
    prob = _sigmoid(logit + ((low + high) / 2)[campaign])
    return _Rows(campaign, user, stage2, prob, rng.random(len(prob)) < prob, static_effects)


def _affinity(users: _Users, profile: np.ndarray, campaign: np.ndarray, user: np.ndarray) -> np.ndarray:
    """Each (campaign, user) row's user topic mix . campaign `profile`."""
    return (users.weights[user] * profile[campaign[:, None], users.topics[user]]).sum(axis=1)


def _group_auc(score: np.ndarray, label: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """AUC per group (NaN without both classes); scores are continuous, so ties are ignored."""
    order = np.lexsort((score, group))
    g, y = group[order], label[order]
    size = np.bincount(g, minlength=groups)
    rank = np.arange(len(g)) - (np.cumsum(size) - size)[g] + 1.0
    pos = np.bincount(g, y, groups)
    neg = size - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.bincount(g, rank * y, groups) - pos * (pos + 1) / 2) / (pos * neg)


def suggested_cold_threshold(seed_positives: Sequence[int] | np.ndarray) -> int:
    """The cold/hot threshold T for this data: the median seed-positive count of the campaigns.

    Campaigns with at most T seed positives are cold, about half of them. The official T = 2000
    fits only the real data's size.
    """
    counts = np.asarray(seed_positives)
    if counts.size == 0:
        raise ValueError("suggested_cold_threshold: no campaigns")
    return int(np.median(counts))


def _write_pairs(
    uri: str,
    rows: _Rows,
    select: np.ndarray,
    camps: _Campaigns,
    users: _Users,
    rng: np.random.Generator,
    header: bool,
) -> None:
    index = rng.permutation(np.nonzero(select)[0])  # rows in random order, as in the contest files
    with storage.open_write(uri) as fh:
        if header:
            fh.write(b"aid,uid,label\n")
        for start in range(0, len(index), _CSV_CHUNK):
            part = index[start : start + _CSV_CHUNK]
            label = np.where(rows.label[part], 1, -1)
            columns = [
                pc.cast(pa.array(a), pa.string())
                for a in (camps.aid[rows.campaign[part]], users.uid[rows.user[part]], label)
            ]
            _write_lines(fh, pc.binary_join_element_wise(*columns, ","))


def _user_lines(users: _Users, part: slice, vocabs: dict[str, _Vocab], rng: np.random.Generator) -> pa.Array:
    """The userFeature.data lines of the users in `part`."""
    topics, weights = users.topics[part], users.weights[part]
    fields = {"uid": _strings("uid", users.uid[part])}
    for name, values in users.single.items():
        fields[name] = _strings(name, values[part], values[part] == 0)
    for name, spec in _LIST_FIELDS.items():
        fields[name] = _list_strings(spec, vocabs[name], rng, topics, weights)
    return pc.binary_join_element_wise(*(fields[name] for name in LINE_ORDER), "|", null_handling="skip")


def _draw(config: SyntheticConfig) -> tuple[_Users, _Campaigns, _Rows]:
    users = _users(config, _rng(config.seed, 0))
    camps = _campaigns(config, _rng(config.seed, 1))
    return users, camps, _rows(config, users, camps, _rng(config.seed, 2))


def _seed_positives(rows: _Rows, campaigns: int) -> np.ndarray:
    return np.bincount(rows.campaign[~rows.stage2 & rows.label], minlength=campaigns)


def planted_scores(config: SyntheticConfig) -> dict[str, np.ndarray]:
    """The data's own ceilings, per (campaign, user) row of `generate(config)`, without writing files.

    `oracle` is the true P(label = 1): no model ranks better. `prior` is the true logit's part that the
    campaign's category and advertiser share, without its own profile and regions: the best a model can do
    without the campaign's seeds, knowing every user's true topic mix. Also each row's `campaign` and
    `user` (indexes), `stage2`, `label`, and `cold`: its campaign has at most the suggested threshold's
    seed positives.
    """
    users, camps, rows = _draw(config)
    prior = config.affinity_scale * _affinity(users, camps.shared, rows.campaign, rows.user)
    category = camps.category[rows.campaign]
    for name, effects in rows.static_effects.items():
        prior += effects[category, users.single[name][rows.user]]
    seeds = _seed_positives(rows, config.campaigns)
    cold = (seeds <= suggested_cold_threshold(seeds))[rows.campaign]
    return {"campaign": rows.campaign, "user": rows.user, "stage2": rows.stage2, "label": rows.label,
            "oracle": rows.prob, "prior": prior, "cold": cold}


def generate(out_dir: str, config: SyntheticConfig, progress: bool = False) -> dict[str, Any]:
    """Write the four raw files under `out_dir` (local path or gs:// URI) and return a summary."""
    seed = config.seed
    users, camps, rows = _draw(config)
    vocabs = {
        name: _Vocab.build(spec, config.topics, _rng(seed, 3, i))
        for i, (name, spec) in enumerate(_LIST_FIELDS.items())
    }

    files = {name: storage.join(out_dir, name) for name in (USER_FILE, AD_FILE, TRAIN_FILE, TEST_FILE)}
    with (
        storage.open_write(files[USER_FILE]) as fh,
        tqdm(total=config.users, unit="user", disable=not progress, desc=USER_FILE) as bar,
        ThreadPoolExecutor(_WORKERS) as pool,
    ):
        # numpy and arrow release the GIL: blocks are built in parallel, written in order, and at
        # most _WORKERS + 1 are held at once.
        pending: deque[Future[pa.Array]] = deque()

        def write_ready(keep: int) -> None:
            while len(pending) > keep:
                lines = pending.popleft().result()
                _write_lines(fh, lines)
                bar.update(len(lines))

        for chunk, start in enumerate(range(0, config.users, config.chunk_users)):
            part = slice(start, start + config.chunk_users)
            pending.append(pool.submit(_user_lines, users, part, vocabs, _rng(seed, 4, chunk)))
            write_ready(_WORKERS)
        write_ready(0)
    with storage.open_write(files[AD_FILE]) as fh:
        fh.write(("\n".join([",".join(AD_COLUMNS), *camps.ad_rows]) + "\n").encode())
    _write_pairs(files[TRAIN_FILE], rows, ~rows.stage2, camps, users, _rng(seed, 5), header=True)
    _write_pairs(files[TEST_FILE], rows, rows.stage2, camps, users, _rng(seed, 6), header=False)

    seeds = _seed_positives(rows, config.campaigns)
    threshold = suggested_cold_threshold(seeds)
    held = rows.stage2
    per_campaign = _group_auc(rows.prob[held], rows.label[held], rows.campaign[held], config.campaigns)
    pooled = _group_auc(rows.prob[held], rows.label[held], np.zeros(held.sum(), dtype=np.int64), 1)
    return {
        "users": config.users,
        "campaigns": config.campaigns,
        "stage1_rows": int((~held).sum()),
        "stage2_rows": int(held.sum()),
        "positive_rate": float(rows.label.mean()),
        "seed_positives_quantiles": {
            f"p{q}": float(np.percentile(seeds, q)) for q in (0, 10, 25, 50, 75, 90, 100)
        },
        "suggested_cold_threshold": threshold,
        "cold_campaigns": int((seeds <= threshold).sum()),
        "hot_campaigns": int((seeds > threshold).sum()),
        # The ceiling a model can reach on stage 2: AUC of the true probabilities.
        "oracle_auc_stage2": float(pooled[0]),
        "oracle_gauc_stage2": float(np.nanmean(per_campaign)),
        "files": files,
        "config": asdict(config),
    }
