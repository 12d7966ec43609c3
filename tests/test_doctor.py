"""`switchboard doctor`: the effective settings with secrets masked, each backend reachable or not
and why, the schema, and the channels (through the running edge)."""

from __future__ import annotations

import json
from typing import Any

from harness.stack import Stack, free_port


def _doctor(stack: Stack, *args: str, **env: str) -> tuple[int, dict[str, Any], str]:
    result = stack.cli("doctor", "--json", "--url", stack.base_url, *args, **env)
    output = result.stdout.decode()
    return result.returncode, json.loads(output), output + result.stderr.decode()


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def test_doctor_reports_backends_schema_and_channels_without_secrets(stack: Stack) -> None:
    channel = stack.add_channel(name="doctor", type="openai", base_url="http://127.0.0.1:9/v1", api_key="sk-doctor-upstream-0123456789",
                                models=["doctor-model"])
    try:
        code, report, raw = _doctor(stack)
    finally:
        with stack.admin() as admin:
            admin.delete(f"/api/channels/{channel['id']}")
    checks = _checks(report)
    assert checks["database"]["ok"] and "schema current" in checks["database"]["detail"], checks["database"]
    assert checks["message broker"]["ok"] and checks["redis"]["ok"]
    if stack.mode == "embedded":
        assert "in-process" in checks["redis"]["detail"]
    ours = next(c for name, c in checks.items() if name.startswith(f"channel {channel['id']} "))
    assert ours["ok"] is False and code == 1, ours  # nothing listens on port 9: the channel does not answer
    assert stack.admin_key not in raw and "sk-doctor-upstream-0123456789" not in raw
    assert report["settings"]["admin_key"] != stack.admin_key


def test_doctor_says_which_backend_is_unreachable_and_why(distributed_stack: Stack) -> None:
    closed = free_port()
    code, report, raw = _doctor(distributed_stack, SB_REDIS_URL=f"redis://:hunter2secret@127.0.0.1:{closed}/0")
    redis = _checks(report)["redis"]
    assert code == 1 and redis["ok"] is False
    assert f"127.0.0.1:{closed}" in redis["detail"] and "unreachable" in redis["detail"] and "Error" in redis["detail"]
    assert "hunter2secret" not in raw, "a password in a URL was printed"
    assert _checks(report)["database"]["ok"]
