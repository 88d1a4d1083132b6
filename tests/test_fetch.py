"""The URL fetcher and the url_parquet source against a real HTTP server on loopback."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flywheel.manifests import RAW_RECORDS
from flywheel.sources.fetch import FetchSettings, SafeFetcher
from flywheel.sources.url_parquet import UrlParquetSourceSettings, ingest_url_parquet
from flywheel.store import ContentStore
from tests.http_server import LoopbackServer, ok, redirect, slow, status

pytestmark = pytest.mark.server
LOOPBACK = FetchSettings(allowed_networks=["127.0.0.0/8"], timeout_s=1.0, retries=2, backoff_s=0.01, max_bytes=50_000)


def jpeg(size=(64, 96), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def flaky(fail_times: int, body: bytes):
    return lambda q, n, h: (503, {}, b"busy") if n <= fail_times else (200, {"Content-Type": "image/jpeg"}, body)


def rate_limited(body: bytes):
    return lambda q, n, h: (429, {"Retry-After": "0"}, b"slow down") if n == 1 else (200, {"Content-Type": "image/jpeg"}, body)


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        r = srv.routes
        r.add("/a.jpg", ok(jpeg()))
        r.add("/b.png", ok(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png"))
        r.add("/missing.jpg", status(404))
        r.add("/broken.jpg", status(500))
        r.add("/flaky.jpg", flaky(2, jpeg(color=(1, 2, 3))))
        r.add("/limited.jpg", rate_limited(jpeg(color=(9, 9, 9))))
        r.add("/slow.jpg", slow(3.0, jpeg()))
        r.add("/page.html", ok(b"<html><body>not an image</body></html>", "text/html"))
        r.add("/liar.jpg", ok(b"<html>pretending</html>", "image/jpeg"))
        r.add("/huge.jpg", ok(b"\xff\xd8\xff" + b"\x00" * 100_000))
        r.add("/huge-chunked.jpg", lambda q, n, h: (200, {"Content-Type": "image/jpeg"}, lambda w: [w.write(b"\xff\xd8\xff" + b"\x00" * 100_000)]))
        r.add("/to-private.jpg", redirect("http://10.1.2.3/secret.jpg"))
        r.add("/to-metadata.jpg", redirect("http://169.254.169.254/latest/meta-data/"))
        r.add("/hop.jpg", redirect("/a.jpg"))
        yield srv


def test_fetch_statuses(server):
    with SafeFetcher(LOOPBACK) as f:
        u = server.url
        assert f.get(f"{u}/a.jpg").status == "ok"
        assert f.get(f"{u}/b.png").media_type == "image/png"
        missing = f.get(f"{u}/missing.jpg")
        assert (missing.status, missing.http_status, missing.attempts) == ("http_error", 404, 1)  # 4xx: no retry
        broken = f.get(f"{u}/broken.jpg")
        assert (broken.status, broken.attempts) == ("http_error", 3)  # 5xx: retried, then given up
        assert f.get(f"{u}/flaky.jpg").status == "ok" and server.routes.hits["/flaky.jpg"] == 3
        assert f.get(f"{u}/limited.jpg").status == "ok" and server.routes.hits["/limited.jpg"] == 2
        assert f.get(f"{u}/page.html").status == "not_image"
        assert f.get(f"{u}/liar.jpg").status == "not_image"
        assert f.get(f"{u}/huge.jpg").status == "too_large"
        assert f.get(f"{u}/huge-chunked.jpg").status == "too_large"
        hop = f.get(f"{u}/hop.jpg")
        assert hop.status == "ok" and hop.final_url.endswith("/a.jpg")


def test_slow_responses_time_out(server):
    with SafeFetcher(LOOPBACK.model_copy(update={"retries": 0, "timeout_s": 0.5})) as f:
        assert f.get(f"{server.url}/slow.jpg").status == "timeout"


def test_private_and_metadata_addresses_are_refused_even_after_redirects(server):
    with SafeFetcher(LOOPBACK) as f:
        private = f.get(f"{server.url}/to-private.jpg")
        assert private.status == "blocked" and "10.1.2.3" in private.reason
        meta = f.get(f"{server.url}/to-metadata.jpg")
        assert meta.status == "blocked" and "169.254.169.254" in meta.reason
    with SafeFetcher(FetchSettings()) as strict:  # loopback is refused unless allowed
        r = strict.get(f"{server.url}/a.jpg")
        assert r.status == "blocked" and "127.0.0.1" in r.reason
        assert server.routes.hits.get("/a.jpg", 0) == 0
        assert strict.get("file:///etc/passwd").status == "blocked"
        assert strict.get("ftp://example.org/x.jpg").status == "blocked"
        assert "non-public" in strict.check_url("http://[::ffff:127.0.0.1]/x")


def test_url_parquet_source_records_every_url_and_skips_fetched_ones(server, tmp_path):
    u = server.url
    urls = [f"{u}/a.jpg", f"{u}/missing.jpg", f"{u}/page.html", f"{u}/to-private.jpg", f"{u}/flaky.jpg", f"{u}/huge.jpg"]
    shard = tmp_path / "shard-0.parquet"
    pq.write_table(pa.table({"url": urls, "caption": [f"caption {i}" for i in range(len(urls))],
                             "width": [64] * len(urls), "height": [96] * len(urls), "NSFW": ["UNLIKELY"] * len(urls)}), shard)
    cfg = UrlParquetSourceSettings(name="laion", shards=[str(tmp_path / "shard-*.parquet")], fetch=LOOPBACK)
    store = ContentStore(tmp_path / "store")
    rows = ingest_url_parquet(cfg, store, "b1")
    RAW_RECORDS.table(rows)  # schema-valid
    by_url = {r["item"]: r for r in rows}
    assert {k.rsplit("/", 1)[1]: v["status"] for k, v in by_url.items()} == {
        "a.jpg": "ok", "missing.jpg": "http_error", "page.html": "not_image", "to-private.jpg": "blocked",
        "flaky.jpg": "ok", "huge.jpg": "too_large"}
    good = by_url[f"{u}/a.jpg"]
    assert store.get(good["sha256"]) == jpeg() and good["caption"] == "caption 0" and '"NSFW":"UNLIKELY"' in good["sidecar_json"]

    hits = dict(server.routes.hits)
    again = ingest_url_parquet(cfg, store, "b2", previous=rows)
    assert again == [] and server.routes.hits == hits  # nothing refetched
    retry = ingest_url_parquet(cfg.model_copy(update={"retry_failed": True}), store, "b3", previous=rows)
    assert sorted(r["item"].rsplit("/", 1)[1] for r in retry) == ["huge.jpg", "missing.jpg", "page.html", "to-private.jpg"]


def test_resize_on_ingest(server, tmp_path):
    big = jpeg(size=(400, 600))
    server.routes.add("/big.jpg", ok(big))
    shard = tmp_path / "s.parquet"
    pq.write_table(pa.table({"url": [f"{server.url}/big.jpg"]}), shard)
    cfg = UrlParquetSourceSettings(name="laion", shards=[str(shard)], resize_max_side=120,
                                   fetch=LOOPBACK.model_copy(update={"max_bytes": 1_000_000}))
    store = ContentStore(tmp_path / "store")
    (row,) = ingest_url_parquet(cfg, store, "b1")
    assert Image.open(io.BytesIO(store.get(row["sha256"]))).size == (80, 120)
    assert '"original_height":600' in row["sidecar_json"]
