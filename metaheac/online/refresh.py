"""Refresh of scheduled expansions: a campaign is expanded again only when what its audience depends on
changed, judged by content, never by path or time.

A campaign's request is hashed from the bytes of its files (manifest, seeds, negatives, exclusion lists),
the global exclusion lists' bytes, its tiers as sizes, the model's recorded content (config.json, which
holds model.pt's sha256), the user base's fingerprint and the options that change an audience (seed
minimum, holdout share, adaptation seed). A stable audiences folder keeps, per campaign:

    <folder>/<campaign>/<request>/audience.parquet   the audience made for that request
    <folder>/<campaign>/<request>/summary.json       its row of the run's summary (tiers, estimate, ...)
    <folder>/<campaign>/LAST.json                    {"request": ...}: the request of the last one written

A request already stored is reused as is; a campaign whose seeds fell below the minimum keeps its LAST
audience, marked stale (Meta and Google make such a look-alike ineligible, and keep it).
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd

from metaheac.online.expand import write_audience
from metaheac.runtime import storage

AUDIENCE_FILE = "audience.parquet"
ROW_FILE = "summary.json"
LAST_FILE = "LAST.json"


def request_digest(request: dict) -> str:
    """sha256 of a request's canonical JSON (keys sorted): equal requests, however written, hash alike."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def stored_uri(folder: str, campaign: str, request: str) -> str:
    return storage.join(folder, campaign, request)


def is_stored(folder: str, campaign: str, request: str) -> bool:
    """Whether the audience of this request is written whole in the stable folder."""
    return storage.is_complete(stored_uri(folder, campaign, request))


def last_request(folder: str, campaign: str) -> str | None:
    """The request of the campaign's last audience written there (None: none yet)."""
    uri = storage.join(folder, campaign, LAST_FILE)
    return str(json.loads(storage.read_text(uri))["request"]) if storage.exists(uri) else None


def store(folder: str, campaign: str, request: str, audience: pd.DataFrame, row: dict) -> None:
    """Write the audience and its summary row as one folder (kept if a run wrote the same request first),
    then point LAST at it."""
    if not is_stored(folder, campaign, request):
        with storage.publish_dir(stored_uri(folder, campaign, request)) as staging:
            write_audience(audience, str(staging / AUDIENCE_FILE))
            (staging / ROW_FILE).write_text(json.dumps(row, indent=2))
    mark_last(folder, campaign, request)


def mark_last(folder: str, campaign: str, request: str) -> None:
    """Record the request of the campaign's audience served last (written or reused)."""
    storage.write_text(storage.join(folder, campaign, LAST_FILE), json.dumps({"request": request}))


def load(folder: str, campaign: str, request: str) -> tuple[pd.DataFrame, dict]:
    """A stored audience and its summary row."""
    uri = storage.published(stored_uri(folder, campaign, request))
    with storage.open_read(storage.join(uri, AUDIENCE_FILE)) as stream:
        audience = pd.read_parquet(stream)
    return audience, json.loads(storage.read_text(storage.join(uri, ROW_FILE)))
