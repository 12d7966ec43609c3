"""The CLI's client of the knowledge admin API (`/api/knowledge/...`), over HTTP.

Every failure becomes a `KnowledgeAPIError` whose message is one line a person can act on
(the edge is unreachable, the admin key is refused, the server's own error message).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

import httpx
from httpx_sse import aconnect_sse
from pydantic import BaseModel, ValidationError

from switchboard_shared.knowledge.progress_models import JobProgress

#: The statuses of a job that has ended (`switchboard_shared.db.JOB_FINISHED`), spelled out so the
#: CLI does not load the database layer (a unit test keeps the two equal).
JOB_ENDED = frozenset({"completed", "failed", "cancelled"})
#: Gaps between reconnections of a dropped progress stream (the server resends the current state).
_RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0)


class KnowledgeAPIError(Exception):
    """The admin API could not do what was asked; `str()` is the one-line reason."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class Target(BaseModel):
    """A knowledge target as `GET /api/knowledge/targets` lists it."""

    id: int
    name: str
    base_url: str


class UploadPart(BaseModel):
    """One file of a multipart job: its document name and bytes."""

    name: str
    data: bytes


def _error(response: httpx.Response) -> KnowledgeAPIError:
    try:
        error = response.json()["error"]
        message, code = str(error["message"]), error.get("code")
    except (ValueError, KeyError, TypeError):
        message, code = response.text.strip()[:200] or response.reason_phrase, None
    if response.status_code == 401:
        message = f"the admin key was refused by {response.request.url.host}:{response.request.url.port} ({message}); use --admin-key or SB_ADMIN_KEY"
    return KnowledgeAPIError(message, response.status_code, code)


class KnowledgeClient:
    """The routes `switchboard ingest` uses. Use as `async with KnowledgeClient(url, key) as api:`."""

    def __init__(self, base_url: str, admin_key: str | None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise KnowledgeAPIError(f"cannot reach Switchboard at {self.base_url} ({type(exc).__name__}: {exc or 'no answer'})") from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json()

    async def targets(self) -> list[Target]:
        """Every knowledge target."""
        return [Target.model_validate(t) for t in (await self._call("GET", "/api/knowledge/targets"))["data"]]

    async def jobs(self) -> list[JobProgress]:
        """The newest jobs (the server lists at most 100), newest first."""
        return [JobProgress.model_validate(j) for j in (await self._call("GET", "/api/knowledge/jobs"))["data"]]

    async def job(self, job_id: int) -> JobProgress:
        """One job's progress."""
        return JobProgress.model_validate(await self._call("GET", f"/api/knowledge/jobs/{job_id}"))

    async def submit_json(self, fields: dict[str, Any]) -> JobProgress:
        """`POST /api/knowledge/jobs` with a JSON body."""
        return JobProgress.model_validate(await self._call("POST", "/api/knowledge/jobs", json=fields))

    async def submit_files(self, fields: dict[str, Any], files: Sequence[UploadPart]) -> JobProgress:
        """`POST /api/knowledge/jobs` as multipart: the files plus the job's fields as the `data` part."""
        parts = [("files", (f.name, f.data, "application/octet-stream")) for f in files]
        body = await self._call("POST", "/api/knowledge/jobs", data={"data": json.dumps(fields)}, files=parts)
        return JobProgress.model_validate(body)

    async def follow(self, job_id: int) -> AsyncIterator[JobProgress]:
        """The job's progress as it changes (`GET /api/knowledge/jobs/{id}/events`), until it has ended.

        A dropped stream is opened again (a few times, with growing gaps): the server starts
        every stream with the job's current state, so nothing is missed.
        """
        failures = 0
        while True:
            try:
                async with aconnect_sse(self._http, "GET", f"/api/knowledge/jobs/{job_id}/events") as source:
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        if source.response.status_code != 503:  # 503: the edge is restarting
                            raise _error(source.response)
                    else:
                        async for event in source.aiter_sse():
                            if event.event not in ("progress", "done"):
                                continue
                            progress = JobProgress.model_validate_json(event.data)
                            failures = 0
                            yield progress
                            if event.event == "done" or progress.status in JOB_ENDED:
                                return
                reason = "the stream ended early"
            except (httpx.TransportError, ValidationError) as exc:
                reason = type(exc).__name__
            if failures >= len(_RECONNECT_SECONDS):
                raise KnowledgeAPIError(f"lost the progress of job {job_id} from {self.base_url} ({reason})")
            await asyncio.sleep(_RECONNECT_SECONDS[failures])
            failures += 1
