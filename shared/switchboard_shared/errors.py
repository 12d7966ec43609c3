"""OpenAI-style errors: the one error shape every service speaks."""

from __future__ import annotations

import orjson

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIError(Exception):
    """An error that reaches the client as `{"error": {message, type, code, param}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers  # e.g. Retry-After on a 429
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPE_BY_STATUS.get(status, "server_error" if status < 502 else "upstream_error")

    def body(self) -> dict:
        """The JSON body OpenAI clients expect."""
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def to_json(self) -> bytes:
        """The body, serialised."""
        return orjson.dumps(self.body())

    @classmethod
    def from_json(cls, status: int, raw: bytes) -> OpenAIError:
        """Rebuild an error from its serialised body (as carried in a stream frame)."""
        err = orjson.loads(raw).get("error", {})
        return cls(status, err.get("message", ""), code=err.get("code"), param=err.get("param"), type=err.get("type"))
