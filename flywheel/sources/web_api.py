"""Image search APIs: Unsplash, Pixabay and Flickr, in their real request/response formats.

Each provider turns (query, page) into a request and a response into items plus the next
page. The API key comes from the environment variable named in config and is redacted
from every message; it is never written to manifests or tracking. 429 responses are
retried after Retry-After (by the fetcher). The next page is persisted (atomically) after
a batch succeeds, so the following refresh continues where this one stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from flywheel.sources.fetch import FetchSettings, SafeFetcher
from flywheel.sources.records import raw_row
from flywheel.sources.url_parquet import fetch_to_row
from flywheel.store import ContentStore

DEFAULT_BASE = {
    "unsplash": "https://api.unsplash.com",
    "pixabay": "https://pixabay.com",
    "flickr": "https://api.flickr.com",
}
FLICKR_LICENSES = {"0": "All Rights Reserved", "1": "CC BY-NC-SA 2.0", "2": "CC BY-NC 2.0", "3": "CC BY-NC-ND 2.0",
                   "4": "CC BY 2.0", "5": "CC BY-SA 2.0", "6": "CC BY-ND 2.0", "7": "No known copyright restrictions",
                   "8": "United States Government Work", "9": "CC0 1.0", "10": "Public Domain Mark 1.0"}


class WebApiSourceSettings(BaseModel):
    type: Literal["web_api"] = "web_api"
    name: str
    provider: Literal["unsplash", "pixabay", "flickr"]
    query: str = "person full body"
    api_key_env: str = Field(description="name of the environment variable holding the API key")
    base_url: str | None = None
    per_page: int = Field(30, ge=1, le=200)
    pages_per_refresh: int = Field(1, ge=1)
    fetch: FetchSettings = Field(default_factory=FetchSettings)


@dataclass
class Item:
    image_url: str
    width: int | None
    height: int | None
    caption: str | None
    licence: str
    attribution: str
    page_url: str | None
    provider_id: str


class WebApiError(RuntimeError):
    pass


def _request(cfg: WebApiSourceSettings, key: str, page: int) -> tuple[str, dict, dict]:
    base = (cfg.base_url or DEFAULT_BASE[cfg.provider]).rstrip("/")
    if cfg.provider == "unsplash":
        return (f"{base}/search/photos", {"query": cfg.query, "page": str(page), "per_page": str(cfg.per_page)},
                {"Authorization": f"Client-ID {key}", "Accept-Version": "v1"})
    if cfg.provider == "pixabay":
        return (f"{base}/api/", {"key": key, "q": cfg.query, "image_type": "photo", "page": str(page),
                                 "per_page": str(cfg.per_page), "safesearch": "true"}, {})
    return (f"{base}/services/rest/", {"method": "flickr.photos.search", "api_key": key, "text": cfg.query,
                                        "page": str(page), "per_page": str(cfg.per_page), "format": "json",
                                        "nojsoncallback": "1", "media": "photos",
                                        "extras": "url_l,o_dims,license,owner_name,description"}, {})


def _parse(provider: str, body: dict, page: int, per_page: int) -> tuple[list[Item], int | None]:
    """Items of one response page and the next page number (None at the end)."""
    if provider == "unsplash":
        items = [Item(r["urls"]["regular"], r.get("width"), r.get("height"), r.get("description") or r.get("alt_description"),
                      "Unsplash License", f"Photo by {r['user']['name']} on Unsplash", r.get("links", {}).get("html"), str(r["id"]))
                 for r in body.get("results", [])]
        return items, page + 1 if page < int(body.get("total_pages", 0)) else None
    if provider == "pixabay":
        items = [Item(h.get("largeImageURL") or h["webformatURL"], h.get("imageWidth"), h.get("imageHeight"), h.get("tags"),
                      "Pixabay Content License", f"Image by {h.get('user')} from Pixabay", h.get("pageURL"), str(h["id"]))
                 for h in body.get("hits", [])]
        return items, page + 1 if items and page * per_page < int(body.get("totalHits", 0)) else None
    if body.get("stat") != "ok":
        raise WebApiError(f"flickr: {body.get('message', 'request failed')} (code {body.get('code')})")
    photos = body["photos"]
    items = [Item(p["url_l"], _int(p.get("width_l")), _int(p.get("height_l")), p.get("title"),
                  FLICKR_LICENSES.get(str(p.get("license")), f"Flickr license {p.get('license')}"),
                  f"Photo by {p.get('ownername') or p.get('owner')} on Flickr",
                  f"https://www.flickr.com/photos/{p.get('owner')}/{p['id']}", str(p["id"]))
             for p in photos.get("photo", []) if p.get("url_l")]
    return items, page + 1 if page < int(photos.get("pages", 0)) else None


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


class Cursor:
    """The next page per source, persisted atomically as JSON."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {"page": 1, "exhausted": False}

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True))
        os.replace(tmp, self.path)


def ingest_web_api(cfg: WebApiSourceSettings, store: ContentStore, batch: str, cursor: Cursor,
                   progress: Callable[[int, int], None] | None = None) -> tuple[list[dict], dict]:
    """Fetch ``pages_per_refresh`` result pages from the cursor on; returns raw rows and the new cursor
    state (the caller saves it once the batch's manifest is written)."""
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise WebApiError(f"source {cfg.name!r}: environment variable {cfg.api_key_env} (API key) is not set")
    state = cursor.load()
    rows: list[dict] = []
    with SafeFetcher(cfg.fetch, secrets=[key]) as fetcher:
        page = int(state.get("page", 1))
        for _ in range(cfg.pages_per_refresh):
            if state.get("exhausted"):
                break
            url, params, headers = _request(cfg, key, page)
            resp = fetcher.get(url, params=params, headers=headers, expect_image=False)
            if not resp.ok:
                rows.append(raw_row(cfg.name, "web_api", batch, f"{cfg.provider}:search:{cfg.query}:page={page}",
                                    resp.status, reason=fetcher.redact(resp.reason or "")))
                break  # keep the cursor on this page: the next refresh retries it
            try:
                items, next_page = _parse(cfg.provider, json.loads(resp.data), page, cfg.per_page)
            except (ValueError, KeyError, WebApiError) as exc:
                rows.append(raw_row(cfg.name, "web_api", batch, f"{cfg.provider}:search:{cfg.query}:page={page}",
                                    "error", reason=fetcher.redact(f"unexpected response: {exc}")))
                break
            for i, it in enumerate(items):
                rows.append(fetch_to_row(fetcher, store, it.image_url, source=cfg.name, source_type="web_api", batch=batch,
                                         caption=it.caption, width=it.width, height=it.height, licence=it.licence,
                                         attribution=it.attribution,
                                         sidecar={"provider": cfg.provider, "provider_id": it.provider_id, "page_url": it.page_url}))
                if progress:
                    progress(len(rows), len(items))
            state = {"page": next_page or page, "exhausted": next_page is None}
            if next_page is None:
                break
            page = next_page
    return rows, state
