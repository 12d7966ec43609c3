"""Knowledge pieces on their own, over real connections: URL fetching (a real HTTP server), document
locks (real Postgres), the process rule's shape, the address policy."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pydantic import ValidationError

from harness.stack import PG_ADMIN_URL
from switchboard_knowledge.document_locks import DocumentLocks
from switchboard_knowledge.sources import SourceError
from switchboard_knowledge.sources.url_fetch import UrlFetcher, refused_address
from switchboard_shared.db import Database
from switchboard_shared.knowledge.file_types import dify_file_name, unsupported_reason
from switchboard_shared.knowledge.options import JobOptions, ProcessRule


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False), ("1.1.1.1", False), ("2606:4700:4700::1111", False),
        ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True),
        ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.1", True),
        ("::1", True), ("fe80::1", True), ("fc00::1", True), ("::ffff:127.0.0.1", True), ("240.0.0.1", True),
    ],
)
def test_address_policy(address: str, refused: bool) -> None:
    assert refused_address(ipaddress.ip_address(address)) is refused


def test_process_rule_mirrors_dify() -> None:
    assert ProcessRule.model_validate({"mode": "automatic"}).rules is None
    custom = {"mode": "custom", "rules": {"pre_processing_rules": [{"id": "remove_extra_spaces", "enabled": True}],
                                          "segmentation": {"separator": "###", "max_tokens": 500, "chunk_overlap": 50}}}
    assert ProcessRule.model_validate(custom).rules.segmentation.max_tokens == 500  # type: ignore[union-attr]
    for bad in (
        {"mode": "custom"},
        {"mode": "hierarchical", "rules": {"segmentation": {"max_tokens": 500}}},
        {"mode": "custom", "rules": {"segmentation": {"max_tokens": 0}}},
        {"mode": "custom", "rules": {"pre_processing_rules": [{"id": "nope", "enabled": True}], "segmentation": {"max_tokens": 9}}},
        {"mode": "automatic", "unknown": 1},
    ):
        with pytest.raises(ValidationError):
            ProcessRule.model_validate(bad)
    fields = JobOptions(indexing_technique="economy", doc_form="text_model").dify_fields()
    assert fields == {"process_rule": {"mode": "automatic"}, "indexing_technique": "economy", "doc_form": "text_model"}


def test_file_names() -> None:
    assert dify_file_name("guides/setup.md") == "guides_setup.md"
    assert "'.exe'" in unsupported_reason("a.EXE") and "without an extension" in unsupported_reason("README")


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 with a few pages."""

    async def doc(_: web.Request) -> web.Response:
        return web.Response(body=b"# Title\n\nBody.", content_type="text/markdown")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(location=f"/hop/{int(request.match_info['n']) - 1}" if request.match_info["n"] != "0" else "/doc")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000, content_type="text/plain")

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"y" * 1000)
        await response.write_eof()
        return response

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    async def missing(_: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    async def binary(_: web.Request) -> web.Response:
        return web.Response(body=b"\x00\x01", content_type="application/octet-stream")

    app = web.Application()
    app.add_routes([web.get("/doc", doc), web.get("/hop/{n}", moved), web.get("/big", big), web.get("/streamed", streamed),
                    web.get("/slow", slow), web.get("/binary", binary), web.get("/missing", missing)])
    runner = web.AppRunner(app)
    await runner.setup()
    server = web.TCPSite(runner, "127.0.0.1", 0)
    await server.start()
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_url_fetch_refuses_private_addresses_by_default(site: str) -> None:
    fetcher = UrlFetcher(max_bytes=10_000, timeout_seconds=5, allow_private=False)
    try:
        for url in (f"{site}/doc", site.replace("127.0.0.1", "localhost") + "/doc", "http://[::1]/x", "http://10.0.0.1/"):
            with pytest.raises(SourceError, match="private, loopback, link-local or reserved"):
                await fetcher.fetch(url)
        with pytest.raises(SourceError, match="only http and https"):
            await fetcher.fetch("file:///etc/passwd")
        with pytest.raises(SourceError, match="cannot be resolved"):
            await fetcher.fetch("http://no-such-host.invalid/")
    finally:
        await fetcher.close()


async def test_url_fetch_limits(site: str) -> None:
    fetcher = UrlFetcher(max_bytes=4096, timeout_seconds=1.0, allow_private=True)
    try:
        fetched = await fetcher.fetch(f"{site}/doc")
        assert fetched.data == b"# Title\n\nBody." and fetched.extension == "md"
        assert (await fetcher.fetch(f"{site}/hop/3")).data == fetched.data  # redirects followed, each re-checked
        with pytest.raises(SourceError, match="redirected more than 5 times"):
            await fetcher.fetch(f"{site}/hop/9")
        with pytest.raises(SourceError, match="5000 bytes"):
            await fetcher.fetch(f"{site}/big")  # declared too large
        with pytest.raises(SourceError, match="larger than 4096"):
            await fetcher.fetch(f"{site}/streamed")  # found too large while reading
        with pytest.raises(SourceError, match="longer than 1 s"):
            await fetcher.fetch(f"{site}/slow")
        with pytest.raises(SourceError, match="HTTP 404"):
            await fetcher.fetch(f"{site}/missing")
        assert (await fetcher.fetch(f"{site}/binary")).extension is None
    finally:
        await fetcher.close()


async def test_document_locks_keep_two_processes_apart_on_postgres() -> None:
    url = PG_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://")
    first, second = Database(url), Database(url)
    try:
        one, two = DocumentLocks(first), DocumentLocks(second)
        async with one.hold([10**9 + 1, 10**9 + 2]) as mine:
            assert mine == {10**9 + 1, 10**9 + 2}
            async with one.hold([10**9 + 2, 10**9 + 3]) as again:
                assert again == {10**9 + 3}  # the same process does not take a document twice
            async with two.hold([10**9 + 2, 10**9 + 4]) as theirs:
                assert theirs == {10**9 + 4}  # the other process skips what the first holds
        async with two.hold([10**9 + 1, 10**9 + 2]) as theirs:
            assert theirs == {10**9 + 1, 10**9 + 2}  # released
        # (A process that dies releases its locks with its connection: the kill test shows that end to end.)
    finally:
        await first.close()
        await second.close()
