"""Unsplash, Pixabay and Flickr clients against fake APIs speaking their formats on loopback."""

import logging

import pytest

from flywheel.manifests import RAW_RECORDS
from flywheel.sources.fetch import FetchSettings
from flywheel.sources.web_api import Cursor, WebApiError, WebApiSourceSettings, ingest_web_api
from flywheel.store import ContentStore
from tests.http_server import LoopbackServer, json_body, ok
from tests.test_fetch import jpeg

pytestmark = pytest.mark.server
KEY = "sk-test-5ecret-key"
FETCH = FetchSettings(allowed_networks=["127.0.0.0/8"], timeout_s=2, retries=2, backoff_s=0.01)


def unsplash_api(base):
    def handler(q, n, h):
        if h.get("Authorization") != f"Client-ID {KEY}":
            return 401, {"Content-Type": "application/json"}, json_body({"errors": ["OAuth error"]})
        if n == 1:
            return 429, {"Retry-After": "0", "Content-Type": "application/json"}, json_body({"errors": ["Rate Limit Exceeded"]})
        page = int(q["page"])
        results = [{"id": f"u{page}{i}", "width": 64, "height": 96, "description": None, "alt_description": f"person {page}{i}",
                    "urls": {"raw": "", "full": "", "regular": f"{base}/img/u{page}{i}.jpg", "small": ""},
                    "links": {"html": f"https://unsplash.com/photos/u{page}{i}"}, "user": {"name": "Ada"}} for i in range(2)]
        return 200, {"Content-Type": "application/json"}, json_body({"total": 6, "total_pages": 3, "results": results})
    return handler


def pixabay_api(base):
    def handler(q, n, h):
        assert q["key"] == KEY
        page = int(q["page"])
        hits = [{"id": 100 * page + i, "pageURL": f"https://pixabay.com/photos/{page}{i}", "tags": "person, woman",
                 "webformatURL": f"{base}/img/p{page}{i}.jpg", "largeImageURL": f"{base}/img/p{page}{i}.jpg",
                 "imageWidth": 64, "imageHeight": 96, "user": "bob", "user_id": 7} for i in range(2)]
        return 200, {"Content-Type": "application/json"}, json_body({"total": 3, "totalHits": 3, "hits": hits if page == 1 else hits[:1]})
    return handler


def flickr_api(base):
    def handler(q, n, h):
        assert q["api_key"] == KEY and q["method"] == "flickr.photos.search" and q["nojsoncallback"] == "1"
        page = int(q["page"])
        photos = [{"id": f"f{page}{i}", "owner": "99@N00", "secret": "s", "server": "1", "farm": 1, "title": f"walk {i}",
                   "license": "4", "ownername": "Cy", "url_l": f"{base}/img/f{page}{i}.jpg", "height_l": "96", "width_l": "64"}
                  for i in range(2)]
        return 200, {"Content-Type": "application/json"}, json_body(
            {"photos": {"page": page, "pages": 1, "perpage": 2, "total": 2, "photo": photos}, "stat": "ok"})
    return handler


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setenv("TEST_API_KEY", KEY)
    with LoopbackServer() as srv:
        srv.routes.add("/search/photos", unsplash_api(srv.url))
        srv.routes.add("/api/", pixabay_api(srv.url))
        srv.routes.add("/services/rest/", flickr_api(srv.url))
        for prefix in "upf":
            for page in range(1, 4):
                for i in range(2):
                    srv.routes.add(f"/img/{prefix}{page}{i}.jpg", ok(jpeg(color=(10 * page, 20 * i, 99))))
        yield srv


def _cfg(provider, srv, **kw):
    return WebApiSourceSettings(name=f"{provider}-people", provider=provider, api_key_env="TEST_API_KEY",
                                base_url=srv.url, per_page=2, fetch=FETCH, **kw)


def test_unsplash_pages_continue_where_the_last_refresh_stopped(api, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    store, cursor = ContentStore(tmp_path / "store"), Cursor(tmp_path / "unsplash.json")
    cfg = _cfg("unsplash", api)
    rows, state = ingest_web_api(cfg, store, "b1", cursor)
    assert [r["status"] for r in rows] == ["ok", "ok"] and state == {"page": 2, "exhausted": False}
    assert api.routes.hits["/search/photos"] == 2  # the 429 was retried
    assert rows[0]["attribution"] == "Photo by Ada on Unsplash" and rows[0]["licence"] == "Unsplash License"
    cursor.save(state)
    rows2, state2 = ingest_web_api(cfg.model_copy(update={"pages_per_refresh": 5}), store, "b2", cursor)
    assert [r["item"].rsplit("/", 1)[1] for r in rows2] == ["u20.jpg", "u21.jpg", "u30.jpg", "u31.jpg"]
    assert state2 == {"page": 3, "exhausted": True}
    table = RAW_RECORDS.table(rows + rows2)
    everything = str(table.to_pylist()) + caplog.text + str(state2)
    assert KEY not in everything


def test_pixabay_and_flickr_formats(api, tmp_path):
    store = ContentStore(tmp_path / "store")
    rows, state = ingest_web_api(_cfg("pixabay", api, pages_per_refresh=3), store, "b1", Cursor(tmp_path / "p.json"))
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows) and state["exhausted"]
    assert rows[0]["licence"] == "Pixabay Content License"
    rows, state = ingest_web_api(_cfg("flickr", api), store, "b1", Cursor(tmp_path / "f.json"))
    assert [r["caption"] for r in rows] == ["walk 0", "walk 1"] and rows[0]["licence"] == "CC BY 2.0"
    assert state == {"page": 1, "exhausted": True}
    for r in rows:
        assert KEY not in str(r)


def test_api_failures_keep_the_cursor_and_never_leak_the_key(api, tmp_path, monkeypatch):
    api.routes.add("/api/", lambda q, n, h: (500, {}, b"down"))
    cursor = Cursor(tmp_path / "p.json")
    rows, state = ingest_web_api(_cfg("pixabay", api), ContentStore(tmp_path / "s"), "b1", cursor)
    assert [r["status"] for r in rows] == ["http_error"] and state == {"page": 1, "exhausted": False}
    assert KEY not in str(rows)
    monkeypatch.delenv("TEST_API_KEY")
    with pytest.raises(WebApiError, match="TEST_API_KEY"):
        ingest_web_api(_cfg("pixabay", api), ContentStore(tmp_path / "s"), "b2", cursor)
