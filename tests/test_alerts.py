"""SMS alerting: config resolution, message composition, sending through the real
Twilio client with HTTP intercepted by ``responses`` (never the network)."""
from __future__ import annotations

import base64
import json
import logging
import os
import socket
import stat
import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
import responses
import urllib3
import urllib3.util.connection
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.rest import Client

from enrich import alerts, errors
from enrich.alerts import (
    MAX_SMS_CHARS,
    AlertResult,
    Failure,
    SmsSendError,
    TwilioConfig,
    TwilioConfigError,
    compose_failure_message,
    load_twilio_config,
    send_alert,
    send_sms,
)
from enrich.secrets import uninstall_redaction

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "f00dfeedcafe5ecre7t0ken0123456789"
BASIC = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
FROM = "+15005550006"
TO = "+33600000001"
TO2 = "+33600000002"
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json"
UNMATCHED_MARKER = "doesn't match any registered mock"
NO_SLEEP = {"sleep": lambda seconds: None}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail the test if anything tries to resolve a host or open a connection."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access attempted during a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts
    assert not attempts, f"test tried to reach the network: {attempts}"


@pytest.fixture(autouse=True)
def _reset_logging_state():
    """Undo the redaction filter and twilio logger level that send_sms installs."""
    http_logger = logging.getLogger("twilio.http_client")
    level = http_logger.level
    yield
    uninstall_redaction()
    http_logger.setLevel(level)


def unmatched_calls(rsps: responses.RequestsMock) -> list[str]:
    """Requests that ``responses`` refused because no mock matched them.

    ``send_sms`` swallows the ConnectionError ``responses`` raises for those
    (it is a network error to it), so they must be looked for explicitly.
    """
    return [f"{call.request.method} {call.request.url}" for call in rsps.calls
            if isinstance(call.response, requests.ConnectionError)
            and UNMATCHED_MARKER in str(call.response)]


@pytest.fixture
def twilio_api():
    """HTTP intercepted; the test fails on any request no mock matched, or unused mocks."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps
        assert not unmatched_calls(rsps), f"unintercepted requests: {unmatched_calls(rsps)}"


def message_resource(to: str, from_: str, body: str, sid: str) -> dict:
    """What Twilio answers (201) to a Messages create request."""
    return {
        "account_sid": SID,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
        "date_sent": None,
        "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": from_,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": f"/2010-04-01/Accounts/{SID}/Messages/{sid}/Media.json"},
        "to": to,
        "uri": f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json",
    }


def add_message_ok(rsps: responses.RequestsMock) -> None:
    """Register the Messages endpoint answering 201 with a fresh SM sid per request."""

    def callback(request):
        form = parse_qs(request.body)
        sid = "SM" + uuid.uuid4().hex
        payload = message_resource(form["To"][0], form["From"][0], form["Body"][0], sid)
        return 201, {"Content-Type": "application/json"}, json.dumps(payload)

    rsps.add_callback(responses.POST, MESSAGES_URL, callback=callback,
                      content_type="application/json")


def add_error(rsps: responses.RequestsMock, status: int, code: int, message: str) -> None:
    """Register one Twilio error answer (legacy error JSON format)."""
    rsps.add(responses.POST, MESSAGES_URL, status=status, json={
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    })


def form_of(call) -> dict[str, str]:
    """The form-encoded body of an intercepted request, one value per key."""
    return {key: values[0] for key, values in parse_qs(call.request.body).items()}


def config(*to: str) -> TwilioConfig:
    return TwilioConfig(account_sid=SID, auth_token=TOKEN, from_=FROM, to=to or (TO,))


def write_config(path: Path, data, mode: int = 0o600) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(mode)
    return path


FULL_FILE = {"account_sid": SID, "auth_token": TOKEN, "from_": FROM, "to": [TO]}


# --------------------------------------------------------------------------- config


def test_nothing_configured_returns_none(tmp_path):
    assert load_twilio_config(tmp_path, environ={}) is None


def test_file_config_with_list_of_recipients(tmp_path, caplog):
    write_config(tmp_path / "twilio_config.json", {**FULL_FILE, "to": [TO, TO2]})
    with caplog.at_level(logging.WARNING):
        cfg = load_twilio_config(tmp_path, environ={})
    assert cfg == TwilioConfig(SID, TOKEN, FROM, (TO, TO2))
    assert caplog.records == []  # mode 600: no permission warning


def test_file_config_with_comma_separated_string_recipient(tmp_path):
    write_config(tmp_path / "twilio_config.json", {**FULL_FILE, "to": f"{TO}, {TO2}"})
    assert load_twilio_config(tmp_path, environ={}).to == (TO, TO2)


def test_file_config_with_single_string_recipient(tmp_path):
    write_config(tmp_path / "twilio_config.json", {**FULL_FILE, "to": TO})
    assert load_twilio_config(tmp_path, environ={}).to == (TO,)


def test_environment_overrides_file_key_by_key(tmp_path):
    write_config(tmp_path / "twilio_config.json", FULL_FILE)
    cfg = load_twilio_config(tmp_path, environ={
        "TWILIO_AUTH_TOKEN": "env-token",
        "TWILIO_TO": f"{TO2},+447700900000",
    })
    assert cfg == TwilioConfig(SID, "env-token", FROM, (TO2, "+447700900000"))


def test_environment_alone_is_enough(tmp_path):
    cfg = load_twilio_config(tmp_path, environ={
        "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM": FROM, "TWILIO_TO": f" {TO} , {TO2} ,",
    })
    assert cfg == TwilioConfig(SID, TOKEN, FROM, (TO, TO2))


def test_blank_environment_values_do_not_override(tmp_path):
    write_config(tmp_path / "twilio_config.json", FULL_FILE)
    cfg = load_twilio_config(tmp_path, environ={"TWILIO_AUTH_TOKEN": "", "TWILIO_TO": " , "})
    assert cfg.auth_token == TOKEN and cfg.to == (TO,)


def test_defaults_to_os_environ(tmp_path, monkeypatch):
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("TWILIO_FROM", FROM)
    monkeypatch.setenv("TWILIO_TO", TO)
    assert load_twilio_config(tmp_path) == config()


def test_partial_configuration_names_missing_keys(tmp_path):
    with pytest.raises(TwilioConfigError) as info:
        load_twilio_config(tmp_path, environ={"TWILIO_ACCOUNT_SID": SID,
                                              "TWILIO_AUTH_TOKEN": TOKEN})
    text = str(info.value)
    assert "'from_'" in text and "TWILIO_FROM" in text
    assert "'to'" in text and "TWILIO_TO" in text
    assert "account_sid'" not in text.split("missing")[1].split(";")[0]
    assert TOKEN not in text


def test_partial_file_names_file_and_missing_key(tmp_path):
    path = write_config(tmp_path / "twilio_config.json",
                        {"account_sid": SID, "auth_token": TOKEN, "from_": FROM})
    with pytest.raises(TwilioConfigError) as info:
        load_twilio_config(tmp_path, environ={})
    assert str(path) in str(info.value) and "'to'" in str(info.value)
    assert TOKEN not in str(info.value)


def test_twilio_config_variable_selects_the_file(tmp_path):
    write_config(tmp_path / "twilio_config.json", {**FULL_FILE, "from_": "+10000000000"})
    other = write_config(tmp_path / "elsewhere.json", FULL_FILE)
    cfg = load_twilio_config(tmp_path, environ={"TWILIO_CONFIG": str(other)})
    assert cfg.from_ == FROM


def test_twilio_config_pointing_to_missing_file(tmp_path):
    missing = tmp_path / "nope" / "twilio.json"
    with pytest.raises(TwilioConfigError, match="TWILIO_CONFIG") as info:
        load_twilio_config(tmp_path, environ={"TWILIO_CONFIG": str(missing)})
    assert str(missing) in str(info.value)


def test_malformed_json_names_file_not_token(tmp_path):
    path = write_config(tmp_path / "twilio_config.json",
                        f'{{"account_sid": "{SID}", "auth_token": "{TOKEN}", "from_": ')
    with pytest.raises(TwilioConfigError) as info:
        load_twilio_config(tmp_path, environ={})
    assert str(path) in str(info.value)
    assert "JSON" in str(info.value)
    assert TOKEN not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("data, key", [
    ({**FULL_FILE, "account_sid": 1234}, "account_sid"),
    ({**FULL_FILE, "auth_token": [TOKEN]}, "auth_token"),
    ({**FULL_FILE, "to": [TO, 33600000002]}, "to"),
    ({**FULL_FILE, "to": {"number": TO}}, "to"),
])
def test_wrongly_typed_key_names_file_and_key(tmp_path, data, key):
    path = write_config(tmp_path / "twilio_config.json", data)
    with pytest.raises(TwilioConfigError) as info:
        load_twilio_config(tmp_path, environ={})
    assert str(path) in str(info.value) and f"'{key}'" in str(info.value)
    assert TOKEN not in str(info.value)


def test_top_level_not_an_object(tmp_path):
    path = write_config(tmp_path / "twilio_config.json", [FULL_FILE])
    with pytest.raises(TwilioConfigError, match="JSON object") as info:
        load_twilio_config(tmp_path, environ={})
    assert str(path) in str(info.value) and TOKEN not in str(info.value)


def test_world_readable_config_file_warns(tmp_path, caplog):
    path = write_config(tmp_path / "twilio_config.json", FULL_FILE, mode=0o644)
    with caplog.at_level(logging.WARNING):
        assert load_twilio_config(tmp_path, environ={}) == config()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0] and "chmod 600" in warnings[0]


def test_repr_and_str_hide_the_token():
    cfg = config()
    assert TOKEN not in repr(cfg) and TOKEN not in str(cfg)
    assert SID in repr(cfg)


def test_config_normalises_recipients_to_tuple():
    assert TwilioConfig(SID, TOKEN, FROM, [TO, TO2]).to == (TO, TO2)  # type: ignore[arg-type]
    assert TwilioConfig(SID, TOKEN, FROM, TO).to == (TO,)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- message


def test_compose_message_layout():
    text = compose_failure_message("TransactionEnrichmentFlow", "1234", [
        Failure("tag_transactions", "ValueError", "boom"),
        Failure("check:completeness_annotations", "CheckFailed", "12 rows lack an annotation"),
        Failure("tag_transactions", "KeyError", "'amount'"),
        Failure("annotate", "RuntimeError", "db locked"),
    ])
    assert text.splitlines() == [
        "[TransactionEnrichmentFlow] run 1234 FAILED: 4 failure(s)",
        "- tag_transactions: ValueError: boom",
        "- check:completeness_annotations: CheckFailed: 12 rows lack an annotation",
        "- tag_transactions: KeyError: 'amount'",
        "- annotate: RuntimeError: db locked",
        "Logs: python algorithm.py logs 1234/tag_transactions",
        "Logs: python algorithm.py logs 1234/annotate",
        "Checks: see check_results for run 1234",
    ]


def test_compose_message_without_checks_has_no_checks_line():
    text = compose_failure_message("F", "7", [Failure("start", "OSError", "disk full")],
                                   logs_command="make logs")
    assert text.splitlines() == ["[F] run 7 FAILED: 1 failure(s)",
                                 "- start: OSError: disk full",
                                 "Logs: make logs 7/start"]


def test_compose_message_only_checks_has_no_logs_line():
    text = compose_failure_message("F", "7", [Failure("check:row_count", "CheckFailed", "0")])
    assert "Logs:" not in text
    assert text.splitlines()[-1] == "Checks: see check_results for run 7"


def test_huge_messages_keep_first_line_and_are_clipped():
    long_line = "x" * 5000
    text = compose_failure_message("F", "99", [
        Failure("a", "ValueError", long_line + "\nsecond line"),
        Failure("b", "ValueError", "first line\nsecond line"),
    ])
    lines = text.splitlines()
    assert lines[1].startswith("- a: ValueError: xxx") and lines[1].endswith("...")
    assert len(lines[1]) <= len("- a: ValueError: ") + 200
    assert lines[2] == "- b: ValueError: first line"
    assert "second line" not in text


def test_traceback_message_keeps_the_exception_line():
    traceback = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                 "    boom()\nZeroDivisionError: division by zero\n")
    text = compose_failure_message("F", "5", [Failure("s", "ZeroDivisionError", traceback)])
    assert "- s: ZeroDivisionError: ZeroDivisionError: division by zero" in text


def test_many_failures_are_summarised_with_and_n_more():
    failures = [Failure(f"step_{i}", "ValueError", "v" * 300) for i in range(40)]
    text = compose_failure_message("TransactionEnrichmentFlow", "1234", failures)
    assert len(text) <= MAX_SMS_CHARS
    shown = [line for line in text.splitlines() if line.startswith("- ")]
    assert 0 < len(shown) < 40
    assert f"... and {40 - len(shown)} more" in text
    # logs lines only for the failures shown
    assert text.count("Logs: ") == len(shown)
    assert text.startswith("[TransactionEnrichmentFlow] run 1234 FAILED: 40 failure(s)")


failures_strategy = st.lists(
    st.builds(
        Failure,
        step=st.one_of(st.text(max_size=300),
                       st.from_regex(r"(check:)?[a-z_]{1,30}", fullmatch=True)),
        error_type=st.text(max_size=300),
        message=st.text(max_size=3000),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(flow_name=st.text(max_size=500),
       run_id=st.text(min_size=1, max_size=100),
       failures=failures_strategy,
       logs_command=st.text(max_size=300))
def test_compose_message_properties(flow_name, run_id, failures, logs_command):
    text = compose_failure_message(flow_name, run_id, failures, logs_command=logs_command)
    assert len(text) <= MAX_SMS_CHARS
    assert run_id in text
    # (run_id may itself contain line breaks, so no splitting into lines here)
    assert f" run {run_id} FAILED: {len(failures)} failure(s)" in text


@settings(max_examples=200, deadline=None)
@given(run_id=st.from_regex(r"[0-9]{1,12}|argo-[a-z0-9-]{1,40}", fullmatch=True),
       failures=st.lists(st.builds(Failure, step=st.from_regex(r"[a-z_]{1,30}", fullmatch=True),
                                   error_type=st.sampled_from(["ValueError", "KeyError"]),
                                   message=st.text(max_size=2000)), max_size=80))
def test_compose_message_accounts_for_every_failure(run_id, failures):
    text = compose_failure_message("TransactionEnrichmentFlow", run_id, failures)
    assert len(text) <= MAX_SMS_CHARS
    lines = text.splitlines()
    assert lines[0] == f"[TransactionEnrichmentFlow] run {run_id} FAILED: {len(failures)} failure(s)"
    shown = sum(1 for line in lines if line.startswith("- "))
    more = [line for line in lines if line.startswith("... and ")]
    hidden = int(more[0].split()[2]) if more else 0
    assert shown + hidden == len(failures)


# --------------------------------------------------------------------------- sending


def test_not_configured_logs_exactly_one_warning(caplog, twilio_api):
    with caplog.at_level(logging.DEBUG):
        result = send_sms(None, "hello", **NO_SLEEP)
    assert result == AlertResult("not_configured", (), (), "Twilio is not configured")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "not configured" in warnings[0].getMessage()
    assert "twilio_config.example.json" in warnings[0].getMessage()
    assert len(twilio_api.calls) == 0


def test_sends_one_request_with_form_body_and_basic_auth(twilio_api):
    add_message_ok(twilio_api)
    result = send_sms(config(), "Run 1234 failed", **NO_SLEEP)

    assert len(twilio_api.calls) == 1
    request = twilio_api.calls[0].request
    assert request.method == "POST" and request.url == MESSAGES_URL
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form_of(twilio_api.calls[0]) == {"To": TO, "From": FROM, "Body": "Run 1234 failed"}
    scheme, value = request.headers["Authorization"].split(" ", 1)
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == f"{SID}:{TOKEN}"

    sid = json.loads(twilio_api.calls[0].response.text)["sid"]
    assert result == AlertResult("sent", (TO,), (sid,), None, delivered=(TO,))
    assert sid.startswith("SM")


def test_plain_registered_response_is_parsed(twilio_api):
    twilio_api.add(responses.POST, MESSAGES_URL, status=201,
                   json=message_resource(TO, FROM, "hi", "SM" + "a" * 32))
    result = send_sms(config(), "hi", **NO_SLEEP)
    assert result.status == "sent" and result.message_sids == ("SM" + "a" * 32,)


def test_one_request_per_recipient(twilio_api):
    add_message_ok(twilio_api)
    result = send_sms(config(TO, TO2), "alert", **NO_SLEEP)
    assert [form_of(call)["To"] for call in twilio_api.calls] == [TO, TO2]
    assert all(form_of(call)["From"] == FROM and form_of(call)["Body"] == "alert"
               for call in twilio_api.calls)
    assert result.status == "sent" and result.recipients == (TO, TO2)
    assert result.delivered == (TO, TO2)
    assert len(set(result.message_sids)) == 2


def test_uses_a_given_client(twilio_api):
    add_message_ok(twilio_api)
    client = Client(SID, TOKEN)
    result = send_sms(config(), "x", client=client, **NO_SLEEP)
    assert result.status == "sent" and len(twilio_api.calls) == 1


def test_retries_500_then_succeeds(twilio_api, caplog):
    add_error(twilio_api, 500, 20500, "Internal Server Error")
    add_message_ok(twilio_api)
    delays: list[float] = []
    with caplog.at_level(logging.WARNING):
        result = send_sms(config(), "x", sleep=delays.append)
    assert len(twilio_api.calls) == 2
    assert result.status == "sent" and result.error is None
    assert delays == [0.5]
    assert any("attempt 1/3" in r.getMessage() and "HTTP 500" in r.getMessage()
               for r in caplog.records)


def test_retries_429_then_succeeds(twilio_api):
    add_error(twilio_api, 429, 20429, "Too Many Requests")
    add_message_ok(twilio_api)
    result = send_sms(config(), "x", **NO_SLEEP)
    assert len(twilio_api.calls) == 2 and result.status == "sent"


def test_no_retry_on_401(twilio_api, caplog):
    add_error(twilio_api, 401, 20003, "Authenticate")
    delays: list[float] = []
    with caplog.at_level(logging.ERROR):
        result = send_sms(config(), "x", sleep=delays.append)
    assert len(twilio_api.calls) == 1
    assert delays == []
    # the intended recipient is recorded even though nothing was sent (issue 15)
    assert result.status == "failed" and result.recipients == (TO,)
    assert result.message_sids == () and result.delivered == ()
    assert result.error == ("Twilio error 20003: Authenticate (HTTP 401) - authentication failed, "
                            "check account_sid and auth_token")
    assert TOKEN not in result.error and BASIC not in result.error
    assert any("401" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_401_skips_the_other_recipients(twilio_api):
    add_error(twilio_api, 401, 20003, "Authenticate")
    result = send_sms(config(TO, TO2), "x", **NO_SLEEP)
    assert len(twilio_api.calls) == 1
    assert result.status == "failed" and result.recipients == (TO, TO2)
    assert result.error.startswith(f"{TO}: Twilio error 20003: Authenticate (HTTP 401)")
    assert f"{TO2}: skipped" in result.error


def test_invalid_number_is_not_retried_and_gives_partial(twilio_api):
    add_error(twilio_api, 400, 21211, f"The 'To' number {TO} is not a valid phone number.")
    add_message_ok(twilio_api)
    result = send_sms(config(TO, TO2), "x", **NO_SLEEP)
    assert [form_of(call)["To"] for call in twilio_api.calls] == [TO, TO2]
    assert result.status == "partial"
    assert result.recipients == (TO, TO2)
    assert result.delivered == (TO2,) and len(result.message_sids) == 1
    assert result.error == (f"{TO}: Twilio error 21211: The 'To' number {TO} is not a valid "
                            "phone number. (HTTP 400)")


def test_connection_error_retried_then_failed(twilio_api):
    twilio_api.add(responses.POST, MESSAGES_URL,
                   body=requests.exceptions.ConnectionError("Connection reset by peer"))
    delays: list[float] = []
    result = send_sms(config(), "x", sleep=delays.append)
    assert len(twilio_api.calls) == 3
    assert delays == [0.5, 1.0]
    assert result.status == "failed" and result.recipients == (TO,)
    assert result.error == "network error: connection reset; gave up after 3 attempts"


def test_timeout_retried_then_succeeds(twilio_api):
    twilio_api.add(responses.POST, MESSAGES_URL,
                   body=requests.exceptions.ReadTimeout("read timed out"))
    add_message_ok(twilio_api)
    result = send_sms(config(), "x", **NO_SLEEP)
    assert len(twilio_api.calls) == 2 and result.status == "sent"


def test_backoff_is_exponential_and_bounded(twilio_api):
    add_error(twilio_api, 503, 20503, "Service Unavailable")
    delays: list[float] = []
    result = send_sms(config(), "x", max_attempts=6, backoff_seconds=4.0, sleep=delays.append)
    assert len(twilio_api.calls) == 6
    assert delays == [4.0, 8.0, 16.0, 30.0, 30.0]
    assert result.status == "failed"
    assert result.error == ("Twilio error 20503: Service Unavailable (HTTP 503); "
                            "gave up after 6 attempts")


def test_problem_details_5xx_is_retried(twilio_api):
    """RFC-9457 error bodies (TwilioServiceException) are classified by status too."""
    twilio_api.add(responses.POST, MESSAGES_URL, status=503, json={
        "type": "https://www.twilio.com/docs/errors/20503", "title": "Service Unavailable",
        "status": 503, "code": 20503, "detail": "try again later"})
    add_message_ok(twilio_api)
    result = send_sms(config(), "x", **NO_SLEEP)
    assert len(twilio_api.calls) == 2 and result.status == "sent"


def test_garbage_success_body_fails_without_raising(twilio_api):
    twilio_api.add(responses.POST, MESSAGES_URL, status=201, body="<html>proxy</html>")
    result = send_sms(config(), "x", **NO_SLEEP)
    assert len(twilio_api.calls) == 1
    assert result.status == "failed" and "unexpected response" in result.error


def test_single_attempt_means_no_retry(twilio_api):
    add_error(twilio_api, 500, 20500, "Internal Server Error")
    result = send_sms(config(), "x", max_attempts=1, **NO_SLEEP)
    assert len(twilio_api.calls) == 1 and result.status == "failed"


def test_invalid_retry_arguments_are_rejected():
    with pytest.raises(ValueError):
        send_sms(config(), "x", max_attempts=0, **NO_SLEEP)
    with pytest.raises(ValueError):
        send_sms(config(), "x", backoff_seconds=-1, **NO_SLEEP)


def test_no_recipient_fails_without_request(twilio_api):
    result = send_sms(TwilioConfig(SID, TOKEN, FROM, ()), "x", **NO_SLEEP)
    assert result.status == "failed" and len(twilio_api.calls) == 0


def test_failing_send_at_debug_never_logs_the_token(twilio_api, caplog):
    """A whole failing send (retries, an error echoing the token) logged at DEBUG."""
    add_error(twilio_api, 500, 20500, "Internal Server Error")
    twilio_api.add(responses.POST, MESSAGES_URL,
                   body=requests.exceptions.ConnectionError(f"proxy said Basic {BASIC}"))
    add_error(twilio_api, 400, 21604, f"Invalid parameter: token {TOKEN} is not a number")
    add_message_ok(twilio_api)
    with caplog.at_level(logging.DEBUG):
        result = send_sms(config(TO, TO2), "x", **NO_SLEEP)
        logging.getLogger("some.other.library").debug("leaked %s / %s", TOKEN, BASIC)
    assert result.status == "partial"
    assert len(twilio_api.calls) == 4
    assert caplog.records, "expected log output"
    for secret in (TOKEN, BASIC):
        assert secret not in caplog.text
        assert all(secret not in r.getMessage() for r in caplog.records)
        assert secret not in repr(result)
    assert "***" in result.error and "***" in caplog.text
    assert logging.getLogger("twilio.http_client").getEffectiveLevel() >= logging.WARNING


def test_twilio_http_logging_is_silenced(twilio_api, caplog):
    add_message_ok(twilio_api)
    with caplog.at_level(logging.DEBUG):
        send_sms(config(), "x", **NO_SLEEP)
    assert not [r for r in caplog.records if r.name.startswith("twilio")]
    assert logging.getLogger("twilio.http_client").level == logging.WARNING


def test_unintercepted_request_is_detected():
    """The guard used by ``twilio_api``: a request no mock matched is reported."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        result = send_sms(config(), "x", max_attempts=1, **NO_SLEEP)
        assert result.status == "failed"
        assert unmatched_calls(rsps) == [f"POST {MESSAGES_URL}"]


def test_socket_guard_blocks_and_records_connections(no_network):
    with pytest.raises(OSError, match="network access attempted"):
        socket.create_connection(("api.twilio.com", 443))
    with pytest.raises(OSError, match="network access attempted"):
        requests.get("https://api.twilio.com/", timeout=1)
    assert len(no_network) >= 2
    no_network.clear()  # recorded as expected; don't fail this test's teardown


def test_no_file_permissions_change(tmp_path):
    """Loading never alters the file's permissions (only warns)."""
    path = write_config(tmp_path / "twilio_config.json", FULL_FILE, mode=0o644)
    load_twilio_config(tmp_path, environ={})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


# --------------------------------------------------------------------------- issue 15: thin records
# "For failed sends alerts.recipients is empty. Each Twilio network error is logged as
# about 400 characters, six times."

MASKED_TO = "+336...01"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def alert_lines(caplog) -> list[logging.LogRecord]:
    """What this module logged at WARNING or above."""
    return [r for r in caplog.records if r.name == "enrich.alerts" and r.levelno >= logging.WARNING]


def wrapped_like_requests(root: BaseException) -> requests.exceptions.ConnectionError:
    """``root`` wrapped the way urllib3 and requests wrap a failed connection:
    ConnectionError(MaxRetryError(reason=NewConnectionError(...) from root))."""
    conn = urllib3.connection.HTTPSConnection("api.twilio.com", 443)  # not connected
    try:
        raise urllib3.exceptions.NewConnectionError(
            conn, f"Failed to establish a new connection: {root}") from root
    except urllib3.exceptions.NewConnectionError as new:
        reason = new
    pool = urllib3.HTTPSConnectionPool("api.twilio.com", 443)
    retry = urllib3.exceptions.MaxRetryError(pool, MESSAGES_URL.split(".com", 1)[1], reason=reason)
    return requests.exceptions.ConnectionError(retry)


def test_wrapped_error_is_as_long_as_the_one_reported():
    """The fixture below reproduces the ~400-character message of the report."""
    exc = wrapped_like_requests(ConnectionRefusedError(111, "Connection refused"))
    assert len(str(exc)) > 250 and "HTTPSConnectionPool" in str(exc)


@pytest.mark.parametrize("error, words", [
    (wrapped_like_requests(ConnectionRefusedError(111, "Connection refused")), "connection refused"),
    (wrapped_like_requests(ConnectionResetError(104, "Connection reset by peer")), "connection reset"),
    (wrapped_like_requests(socket.gaierror(-3, "Temporary failure in name resolution")),
     "host name lookup failed"),
    (wrapped_like_requests(OSError(113, "No route to host")), "no route to host"),
    (requests.exceptions.ConnectTimeout(urllib3.exceptions.ConnectTimeoutError(
        None, "Connection to api.twilio.com timed out. (connect timeout=15.0)")), "connection timed out"),
    (requests.exceptions.ReadTimeout(urllib3.exceptions.ReadTimeoutError(
        None, MESSAGES_URL, "Read timed out. (read timeout=15.0)")), "read timed out"),
    (requests.exceptions.ConnectionError("Connection aborted.", "RemoteDisconnected('Remote end "
                                         "closed connection without response')"),
     "connection closed by the server"),
    (requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
     "TLS handshake failed"),
])
def test_network_error_is_named_in_a_few_words(twilio_api, caplog, error, words):
    twilio_api.add(responses.POST, MESSAGES_URL, body=error)
    with caplog.at_level(logging.DEBUG):
        result = send_sms(config(), "x", max_attempts=1, **NO_SLEEP)
    assert result.error == f"network error: {words}"
    lines = alert_lines(caplog)
    assert [r.getMessage() for r in lines] == [f"SMS attempt 1/1 to {MASKED_TO} failed: {words}; giving up"]


def test_network_failure_is_logged_once_per_attempt_in_one_short_line(twilio_api, caplog):
    twilio_api.add(responses.POST, MESSAGES_URL,
                   body=wrapped_like_requests(ConnectionRefusedError(111, "Connection refused")))
    delays: list[float] = []
    with caplog.at_level(logging.DEBUG):
        result = send_sms(config(), "x", max_attempts=4, sleep=delays.append)
    assert len(twilio_api.calls) == 4 and delays == [0.5, 1.0, 2.0]
    assert [r.getMessage() for r in alert_lines(caplog)] == [
        f"SMS attempt 1/4 to {MASKED_TO} failed: connection refused; retrying in 0.5 s",
        f"SMS attempt 2/4 to {MASKED_TO} failed: connection refused; retrying in 1.0 s",
        f"SMS attempt 3/4 to {MASKED_TO} failed: connection refused; retrying in 2.0 s",
        f"SMS attempt 4/4 to {MASKED_TO} failed: connection refused; giving up",
    ]
    # nothing else, from any logger, says it again; no traceback, no raw repr
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 4
    assert all(r.exc_info is None and r.exc_text is None for r in caplog.records)
    assert all(len(r.getMessage()) <= 100 for r in caplog.records)
    assert "HTTPSConnectionPool" not in caplog.text and "Traceback" not in caplog.text
    assert result.error == "network error: connection refused; gave up after 4 attempts"
    assert result.recipients == (TO,) and result.status == "failed"


@pytest.fixture
def refused_by_the_socket(monkeypatch):
    """No interception: the real twilio -> requests -> urllib3 stack runs, and its
    connection attempt is refused where urllib3 opens the socket (never the network)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    opened: list[tuple] = []

    def refuse(address, *args, **kwargs):
        opened.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", refuse)
    return opened


def test_refused_connection_through_the_real_stack(refused_by_the_socket, caplog):
    delays: list[float] = []
    with caplog.at_level(logging.DEBUG):
        result = send_sms(config(TO, TO2), "x", max_attempts=2, sleep=delays.append)
    assert refused_by_the_socket == [("api.twilio.com", 443)] * 4  # 2 attempts x 2 recipients
    assert result == AlertResult("failed", (TO, TO2), (), "network error: connection refused; "
                                 "gave up after 2 attempts")
    assert [r.getMessage() for r in alert_lines(caplog)] == [
        f"SMS attempt 1/2 to {MASKED_TO} failed: connection refused; retrying in 0.5 s",
        f"SMS attempt 2/2 to {MASKED_TO} failed: connection refused; giving up",
        "SMS attempt 1/2 to +336...02 failed: connection refused; retrying in 0.5 s",
        "SMS attempt 2/2 to +336...02 failed: connection refused; giving up",
    ]
    assert "Caused by" not in caplog.text and "Errno" not in caplog.text


def test_5xx_is_logged_once_per_attempt_with_code_and_message(twilio_api, caplog):
    add_error(twilio_api, 503, 20503, "Service Unavailable")
    with caplog.at_level(logging.DEBUG):
        result = send_sms(config(), "x", **NO_SLEEP)
    reason = "Twilio error 20503: Service Unavailable (HTTP 503)"
    assert [r.getMessage() for r in alert_lines(caplog)] == [
        f"SMS attempt 1/3 to {MASKED_TO} failed: {reason}; retrying in 0.5 s",
        f"SMS attempt 2/3 to {MASKED_TO} failed: {reason}; retrying in 1.0 s",
        f"SMS attempt 3/3 to {MASKED_TO} failed: {reason}; giving up",
    ]
    assert result.error == f"{reason}; gave up after 3 attempts"


def test_permanent_error_is_logged_once_with_its_reason(twilio_api, caplog):
    add_error(twilio_api, 401, 20003, "Authenticate")
    with caplog.at_level(logging.DEBUG):
        send_sms(config(), "x", **NO_SLEEP)
    assert [(r.levelno, r.getMessage()) for r in alert_lines(caplog)] == [
        (logging.ERROR, f"SMS attempt 1/3 to {MASKED_TO} failed: Twilio error 20003: Authenticate "
                        "(HTTP 401) - authentication failed, check account_sid and auth_token; "
                        "not retried (permanent error)"),
    ]


def test_401_records_every_intended_recipient(twilio_api):
    add_error(twilio_api, 401, 20003, "Authenticate")
    result = send_sms(config(TO, TO2), "x", **NO_SLEEP)
    assert result.recipients == (TO, TO2) and result.delivered == ()
    assert "\n" not in result.error


def test_invalid_number_without_retry_is_one_line(twilio_api, caplog):
    add_error(twilio_api, 400, 21211, "The 'To' number +3360 is not a valid phone number.")
    with caplog.at_level(logging.DEBUG):
        result = send_sms(config(), "x", **NO_SLEEP)
    assert len(twilio_api.calls) == 1
    assert result.error == "Twilio error 21211: The 'To' number +3360 is not a valid phone number. (HTTP 400)"
    assert len(alert_lines(caplog)) == 1


def test_problem_details_error_is_one_line_with_code_title_and_detail(twilio_api):
    twilio_api.add(responses.POST, MESSAGES_URL, status=400, json={
        "type": "https://www.twilio.com/docs/errors/21211", "title": "Invalid 'To' Phone Number",
        "status": 400, "code": 21211, "detail": "The number +3360\nis not valid"})
    result = send_sms(config(), "x", **NO_SLEEP)
    assert result.error == ("Twilio error 21211: Invalid 'To' Phone Number - The number +3360 "
                            "is not valid (HTTP 400)")


def test_error_body_that_is_not_json_gives_the_http_reason(twilio_api):
    twilio_api.add(responses.POST, MESSAGES_URL, status=502, body="<html>Bad gateway</html>")
    twilio_api.add(responses.POST, MESSAGES_URL, status=502, body="<html>Bad gateway</html>")
    result = send_sms(config(), "x", max_attempts=2, **NO_SLEEP)
    assert result.error == "HTTP 502: Bad Gateway; gave up after 2 attempts"


def test_error_stays_one_line_when_stderr_is_a_terminal(twilio_api, caplog, monkeypatch):
    """On a terminal twilio's str() of an error is a multi-line coloured report: not used."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    add_error(twilio_api, 401, 20003, "Authenticate")
    with caplog.at_level(logging.DEBUG):
        result = send_sms(config(), "x", **NO_SLEEP)
    assert result.error.startswith("Twilio error 20003: Authenticate (HTTP 401)")
    assert "\n" not in caplog.text.strip() and "\033" not in caplog.text + result.error


def test_secret_in_a_twilio_message_is_masked_in_the_one_line(twilio_api, caplog):
    add_error(twilio_api, 400, 21604, f"token {TOKEN} / {BASIC} rejected")
    with caplog.at_level(logging.DEBUG):
        result = send_sms(config(), "x", **NO_SLEEP)
    assert result.error == "Twilio error 21604: token *** / *** rejected (HTTP 400)"
    assert TOKEN not in caplog.text and BASIC not in caplog.text


def test_long_twilio_message_is_clipped(twilio_api):
    add_error(twilio_api, 400, 21617, "x" * 5000)
    result = send_sms(config(), "x", **NO_SLEEP)
    assert len(result.error) <= alerts.MAX_REASON_CHARS and result.error.endswith("...")


def test_sent_alert_is_logged_with_the_number_masked(twilio_api, caplog):
    add_message_ok(twilio_api)
    with caplog.at_level(logging.DEBUG):
        send_sms(config(), "x", **NO_SLEEP)
    assert TO not in caplog.text and f"SMS alert sent to {MASKED_TO}" in caplog.text


# --------------------------------------------------------------------------- exception classes


def test_config_error_is_a_permanent_configuration_error():
    assert issubclass(TwilioConfigError, errors.ConfigurationError)
    assert issubclass(TwilioConfigError, errors.PermanentError)
    assert errors.is_permanent(TwilioConfigError("bad"))
    assert isinstance(TwilioConfigError("bad"), errors.EnrichError)


def test_send_error_is_an_alerting_error():
    assert issubclass(SmsSendError, errors.AlertingError)
    assert not errors.is_permanent(SmsSendError("x", transient=True))


@pytest.mark.parametrize("cls", [TwilioConfigError, SmsSendError])
def test_exception_classes_have_docstrings(cls):
    assert cls.__doc__ and cls.__doc__.strip()
    assert cls.__init__.__doc__


def test_config_error_survives_pickling_with_its_recipients():
    """Metaflow may pickle an exception between processes."""
    import pickle

    exc = pickle.loads(pickle.dumps(TwilioConfigError("bad", recipients=[TO])))
    assert str(exc) == "bad" and exc.recipients == (TO,)


def test_partial_configuration_error_carries_the_configured_recipients(tmp_path):
    with pytest.raises(TwilioConfigError) as info:
        load_twilio_config(tmp_path, environ={"TWILIO_TO": f"{TO},{TO2}", "TWILIO_FROM": FROM})
    assert info.value.recipients == (TO, TO2)


def test_unreadable_file_error_carries_the_environment_recipients(tmp_path):
    write_config(tmp_path / "twilio_config.json", "{not json")
    with pytest.raises(TwilioConfigError) as info:
        load_twilio_config(tmp_path, environ={"TWILIO_TO": TO})
    assert info.value.recipients == (TO,)
    with pytest.raises(TwilioConfigError) as info:
        load_twilio_config(tmp_path, environ={})
    assert info.value.recipients == ()


def test_environment_token_is_masked_even_when_the_file_is_broken(tmp_path, caplog):
    write_config(tmp_path / "twilio_config.json", "{not json")
    with pytest.raises(TwilioConfigError):
        load_twilio_config(tmp_path, environ={"TWILIO_AUTH_TOKEN": TOKEN})
    logging.getLogger("enrich.test").error("echo %s", TOKEN)
    assert TOKEN not in caplog.text


# --------------------------------------------------------------------------- send_alert


ENV = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_FROM": FROM, "TWILIO_TO": TO}


def test_send_alert_sends_with_the_loaded_configuration(tmp_path, twilio_api):
    add_message_ok(twilio_api)
    result = send_alert("run failed", tmp_path, environ=ENV, **NO_SLEEP)
    assert result.status == "sent" and result.recipients == (TO,)
    assert form_of(twilio_api.calls[0])["Body"] == "run failed"


def test_send_alert_without_configuration_is_not_configured(tmp_path, twilio_api, caplog):
    with caplog.at_level(logging.DEBUG):
        result = send_alert("x", tmp_path, environ={}, **NO_SLEEP)
    assert result == AlertResult("not_configured", (), (), "Twilio is not configured")
    assert len(alert_lines(caplog)) == 1


def test_send_alert_with_a_broken_configuration_records_its_recipients(tmp_path, twilio_api, caplog):
    environ = {key: value for key, value in ENV.items() if key != "TWILIO_AUTH_TOKEN"}
    with caplog.at_level(logging.DEBUG):
        result = send_alert("x", tmp_path, environ=environ, **NO_SLEEP)
    assert result.status == "not_configured" and result.recipients == (TO,)
    assert result.error.startswith("Twilio is only partially configured: missing 'auth_token'")
    assert "\n" not in result.error
    assert [r.getMessage() for r in alert_lines(caplog)] == [f"SMS alert not sent: {result.error}"]
    assert len(twilio_api.calls) == 0


def test_send_alert_passes_the_retry_settings(tmp_path, twilio_api):
    add_error(twilio_api, 500, 20500, "Internal Server Error")
    delays: list[float] = []
    result = send_alert("x", tmp_path, environ=ENV, max_attempts=2, backoff_seconds=2.0,
                        sleep=delays.append)
    assert len(twilio_api.calls) == 2 and delays == [2.0] and result.status == "failed"
