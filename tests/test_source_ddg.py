"""The ddg source through its search seam: a fake image search served locally (IMGCLASS_SEARCH_URL)
or a `search=` callable; rate limits, caching of searches across runs, and the offline error."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from ddgs.exceptions import DDGSException, RatelimitException

from httpserver import LocalServer, closed_port, distinct_jpegs, image, make_params, send, sequence, status
from imgclass.data.sources import SourceError
from imgclass.data.sources import ddg

TINY_BACKOFF = {"retries": 3, "backoff_base": 0.001, "backoff_max": 0.01, "pause": 0.0}
FAST_DOWNLOAD = {"workers": 4, "timeout": 2.0, "retries": 0, "backoff": 0.01}
QUERIES = ["{class} photo", "{class} sun photo"]


def ddg_params(classes=("cat", "dog"), max_per_class=3, **ddg_section):
    return make_params(list(classes), source="ddg", max_per_class=max_per_class, download=FAST_DOWNLOAD,
                       ddg={"queries": QUERIES, **TINY_BACKOFF, **ddg_section})


def fake_search(server: LocalServer, catalogue: dict[str, list[str]]):
    """A responder answering `?q=<query>&max_results=N` like DDGS().images: image URLs on `server`."""
    def respond(handler, hit):
        args = parse_qs(urlsplit(handler.path).query)
        paths = catalogue.get(args["q"][0], [])[: int(args["max_results"][0])]
        body = json.dumps([{"title": p, "image": server.url(p), "thumbnail": "", "url": ""} for p in paths]).encode()
        send(handler, 200, body, "application/json")
    return respond


def searches(server: LocalServer) -> list[str]:
    return [parse_qs(urlsplit(q).query)["q"][0] for q in server.queries if q.startswith("/search")]


@pytest.fixture
def catalogue_server(monkeypatch):
    """Images for cat and dog, with a URL shared by two queries and the same bytes under two URLs."""
    images = distinct_jpegs(6)
    catalogue = {
        "cat photo": ["/cat0.jpg", "/cat1.jpg", "/gone.jpg"],
        "cat sun photo": ["/cat0.jpg", "/cat1-copy.jpg", "/cat2.jpg"],
        "dog photo": ["/dog0.jpg"],
        "dog sun photo": ["/dog1.jpg", "/dog2.jpg", "/dog3.jpg"],
    }
    with LocalServer() as server:
        for name, data in zip(["cat0", "cat1", "cat2", "dog0", "dog1", "dog2"], images):
            server.route(f"/{name}.jpg", image(data))
        server.route("/cat1-copy.jpg", image(images[1]))
        server.route("/dog3.jpg", image(images[0]))
        server.route("/search", sequence(status(429, body=b"slow down"), fake_search(server, catalogue)))
        monkeypatch.setenv(ddg.SEARCH_URL_ENV, server.url("/search"))
        yield server


def test_search_and_download_through_the_http_seam(catalogue_server, tmp_path):
    server = catalogue_server
    rows = ddg.collect(ddg_params(), tmp_path)

    # The first search was rate-limited (429) and retried; then each query once.
    assert searches(server) == ["cat photo", "cat photo", "cat sun photo", "dog photo", "dog sun photo"]
    assert all("max_results=3" in q for q in server.queries if q.startswith("/search"))
    got = [(r["class"], r["query"], r["url"].rsplit("/", 1)[1], r["status"], r["reason"].split(":")[0]) for r in rows]
    # Interleaved across queries, /cat0.jpg (in both queries) once; stops at 3 distinct images per class.
    assert got == [
        ("cat", "cat photo", "cat0.jpg", "ok", ""),
        ("cat", "cat photo", "cat1.jpg", "ok", ""),
        ("cat", "cat sun photo", "cat1-copy.jpg", "exists", "duplicate_of"),
        ("cat", "cat photo", "gone.jpg", "failed", "http_404"),
        ("cat", "cat sun photo", "cat2.jpg", "ok", ""),
        ("dog", "dog photo", "dog0.jpg", "ok", ""),
        ("dog", "dog sun photo", "dog1.jpg", "ok", ""),
        ("dog", "dog sun photo", "dog2.jpg", "ok", ""),
    ]
    assert server.hits["/dog3.jpg"] == 0
    assert {p.parent.name for p in tmp_path.glob("*/*.jpg")} == {"cat", "dog"}
    assert len(list(tmp_path.glob("cat/*.jpg"))) == 3 and len(list(tmp_path.glob("dog/*.jpg"))) == 3


def test_rerun_neither_searches_nor_downloads_again(catalogue_server, tmp_path):
    server = catalogue_server
    first = ddg.collect(ddg_params(), tmp_path)
    hits = dict(server.hits)
    again = ddg.collect(ddg_params(), tmp_path)
    assert dict(server.hits) == hits
    assert [(r["url"], r["status"] == "failed") for r in again] == [(r["url"], r["status"] == "failed") for r in first]
    assert {r["reason"] for r in again if r["status"] != "failed"} == {"earlier_run"}


def test_block_in_a_later_class_keeps_earlier_downloads_and_resumes(monkeypatch, tmp_path):
    (cat,) = distinct_jpegs(1)
    with LocalServer() as server:
        server.route("/cat.jpg", image(cat))
        server.route("/search", sequence(fake_search(server, {"cat photo": ["/cat.jpg"]}), status(202)))
        monkeypatch.setenv(ddg.SEARCH_URL_ENV, server.url("/search"))
        params = ddg_params(queries=["{class} photo"], retries=2)
        with pytest.raises(SourceError) as error:
            ddg.collect(params, tmp_path)
        assert str(error.value) == ("image search unreachable: rate_limited (http_202) after 2 retries; "
                                    "downloaded images kept")
        assert searches(server) == ["cat photo"] + ["dog photo"] * 3
        assert len(list(tmp_path.glob("cat/*.jpg"))) == 1

        # Unblocked: the rerun searches only the class that was not searched yet.
        server.route("/search", fake_search(server, {"dog photo": []}))
        rows = ddg.collect(params, tmp_path)
    assert searches(server) == ["cat photo"] + ["dog photo"] * 4
    assert [(r["class"], r["status"], r["reason"]) for r in rows] == [("cat", "exists", "earlier_run")]
    assert server.hits["/cat.jpg"] == 1


def test_offline_is_one_clear_source_error(monkeypatch, tmp_path):
    monkeypatch.setenv(ddg.SEARCH_URL_ENV, f"http://127.0.0.1:{closed_port()}/search")
    with pytest.raises(SourceError) as error:
        ddg.collect(ddg_params(), tmp_path)
    message = str(error.value)
    assert message.startswith("image search unreachable: connection_error (http://127.0.0.1:")
    assert message.endswith("; downloaded images kept") and "\n" not in message


def test_search_callable_is_retried_with_backoff(tmp_path):
    (cat,) = distinct_jpegs(1)
    calls = []
    with LocalServer({"/cat.jpg": image(cat)}) as server:
        def search(query, max_results):
            calls.append(query)
            if len(calls) <= 2:
                raise RatelimitException("202 Ratelimit")
            return [{"image": server.url("/cat.jpg"), "title": query}] if query.startswith("cat") else []

        rows = ddg.collect(ddg_params(classes=("cat", "dog"), queries=["{class} photo"]), tmp_path, search=search)
    assert calls == ["cat photo"] * 3 + ["dog photo"]
    assert [(r["class"], r["status"]) for r in rows] == [("cat", "ok")]


def test_ddgs_backend_gets_the_params_and_its_errors_are_sorted(monkeypatch):
    calls = []

    class FakeDDGS:
        error: Exception | None = None

        def __init__(self, timeout=None):
            pass

        def images(self, query, **kwargs):
            calls.append((query, kwargs))
            if FakeDDGS.error:
                raise FakeDDGS.error
            return [{"image": "http://x/a.jpg"}]

    monkeypatch.setattr(ddg, "DDGS", FakeDDGS)
    params = ddg_params(region="de-de", safesearch="off", size="Large", type_image="photo",
                        license_image="Public", backend="duckduckgo")
    search = ddg.ddgs_search(params.scrape.ddg)
    assert search("cat photo", 7) == [{"image": "http://x/a.jpg"}]
    assert calls == [("cat photo", {"region": "de-de", "safesearch": "off", "size": "Large", "type_image": "photo",
                                    "license_image": "Public", "backend": "duckduckgo", "max_results": 7})]

    FakeDDGS.error = DDGSException("ConnectError: ConnectError('error sending request > Connection refused (os error 111)')")
    with pytest.raises(ddg.SearchUnreachable, match="connection_error"):
        search("cat photo", 7)
    FakeDDGS.error = DDGSException("https://duckduckgo.com/i.js 403 Ratelimit")
    with pytest.raises(RatelimitException):
        search("cat photo", 7)
    FakeDDGS.error = DDGSException("No results found.")  # how ddgs reports a silent block: retried
    with pytest.raises(DDGSException):
        search("cat photo", 7)


def test_search_cache_is_keyed_by_query_and_filters(tmp_path):
    base = ddg_params().scrape.ddg
    path = ddg.search_cache_path(tmp_path, "cat photo", base)
    assert path == ddg.search_cache_path(tmp_path, "cat photo", base.model_copy(update={"retries": 9}))
    assert path != ddg.search_cache_path(tmp_path, "cat photo", base.model_copy(update={"region": "de-de"}))
    assert path != ddg.search_cache_path(tmp_path, "dog photo", base)
