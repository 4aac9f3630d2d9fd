"""JSON logs without secrets; settings from prefixed environment variables."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace
from pydantic import ValidationError

from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.servicekit.logging import JsonFormatter, redact
from voiceagent_backbone.state_svc.config import StateSettings


def _log_line(message: str, *args: object, **extra: object) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test_svc"))
    logger = logging.getLogger(f"test.logging.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.warning(message, *args, extra=extra)
    parsed: dict[str, object] = json.loads(stream.getvalue())
    return parsed


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnQiOiJhY21lIn0.c2lnbmF0dXJlc2lnbmF0dXJl"


def test_log_lines_are_json_with_service_and_extra_fields() -> None:
    line = _log_line("stored %d events", 3, conversation_id="c1")
    assert line["msg"] == "stored 3 events"
    assert line["service"] == "test_svc"
    assert line["level"] == "WARNING"
    assert line["conversation_id"] == "c1"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"authorization: Bearer {JWT}", JWT),
        (f"got token {JWT} from the client", JWT),
        ("connect mongodb://admin:s3cr3tpass@db:27017/x", "s3cr3tpass"),
        ("api_key=sk-abcdefghijklmnop", "sk-abcdefghijklmnop"),
        ("password: hunter2", "hunter2"),
    ],
)
def test_secrets_never_reach_the_log(text: str, secret: str) -> None:
    assert secret not in redact(text)
    line = _log_line(text)
    assert secret not in json.dumps(line)


def test_secret_named_extra_fields_are_redacted() -> None:
    line = _log_line("call", authorization=f"Bearer {JWT}", api_key="abc", headers={"token": "t"})
    assert line["authorization"] == "[REDACTED]"
    assert line["api_key"] == "[REDACTED]"
    assert line["headers"] == {"token": "[REDACTED]"}


def test_exception_text_is_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test_svc"))
    logger = logging.getLogger("test.logging.exc")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        raise RuntimeError(f"upstream refused Bearer {JWT}")
    except RuntimeError:
        logger.exception("failed")
    line = json.loads(stream.getvalue())
    assert "RuntimeError" in line["exc"]
    assert JWT not in stream.getvalue()


def test_log_line_carries_the_current_trace() -> None:
    with trace.get_tracer("test").start_as_current_span("op") as span:
        line = _log_line("inside a span")
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_settings_come_from_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_PORT", "6001")
    monkeypatch.setenv("STATE_GRACE_PERIOD_S", "7.5")
    monkeypatch.setenv("STATE_AUTH_JWT_ALGORITHMS", '["RS256"]')
    monkeypatch.setenv("CONTEXT_PORT", "6002")
    state, context = StateSettings(), ContextSettings()
    assert (state.port, state.grace_period_s, state.auth_jwt_algorithms) == (6001, 7.5, ["RS256"])
    assert context.port == 6002


def test_bad_setting_is_a_readable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_PORT", "70000")
    with pytest.raises(ValidationError) as info:
        StateSettings()
    assert "port" in str(info.value)


def test_key_and_key_file_together_are_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("k" * 40)
    with pytest.raises(ValidationError, match="only one of"):
        StateSettings(auth_jwt_key="k" * 40, auth_jwt_key_file=key_file)  # type: ignore[arg-type]
    assert StateSettings(auth_jwt_key_file=key_file).jwt_key() == "k" * 40


def test_short_hmac_key_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voiceagent_backbone.state_svc"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"STATE_AUTH_JWT_KEY": "short", "STATE_PORT": "0", "STATE_METRICS_PORT": "-1"},
    )
    assert result.returncode != 0
    assert "at least 32 bytes" in result.stderr
