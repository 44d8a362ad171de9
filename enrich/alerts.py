"""SMS alerting for failed flow runs, through Twilio.

Three parts, used by the flow's failure-check step:

* :func:`load_twilio_config` finds the Twilio settings (``twilio_config.json``
  or the file named by ``TWILIO_CONFIG``, overridden key by key by the
  ``TWILIO_*`` environment variables);
* :func:`compose_failure_message` turns the run's failures into one SMS body of
  at most :data:`MAX_SMS_CHARS` characters;
* :func:`send_sms` sends it to every recipient with the official Twilio client,
  retrying transient errors, and reports the outcome as an :class:`AlertResult`
  instead of raising.

The auth token is kept out of ``repr``, error messages, :class:`AlertResult`
and log output (see :mod:`enrich.secrets`).
"""
from __future__ import annotations

import base64
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from enrich.failures import Failure
from enrich.secrets import install_redaction, redact, warn_if_world_readable

try:  # twilio >= 9.4: RFC-9457 problem-details errors
    from twilio.base.exceptions import TwilioServiceException
except ImportError:  # pragma: no cover - older twilio
    TwilioServiceException = TwilioRestException  # type: ignore[misc, assignment]

logger = logging.getLogger(__name__)

__all__ = [
    "AlertResult",
    "CONFIG_FILENAME",
    "ENV_VARS",
    "Failure",
    "MAX_SMS_CHARS",
    "TwilioConfig",
    "TwilioConfigError",
    "compose_failure_message",
    "load_twilio_config",
    "send_sms",
]

#: Default config file name, looked up in the project directory.
CONFIG_FILENAME = "twilio_config.json"
#: Environment variable naming an alternative config file.
CONFIG_PATH_ENV = "TWILIO_CONFIG"
#: Config key -> environment variable overriding it.
ENV_VARS: dict[str, str] = {
    "account_sid": "TWILIO_ACCOUNT_SID",
    "auth_token": "TWILIO_AUTH_TOKEN",
    "from_": "TWILIO_FROM",
    "to": "TWILIO_TO",
}
_KEYS = tuple(ENV_VARS)

#: Twilio's hard limit for a message body, in characters.
MAX_SMS_CHARS = 1600
#: Longest failure message kept in an SMS (first line only).
MAX_FAILURE_MESSAGE_CHARS = 200
#: Longest flow name / step name / error type kept in an SMS.
MAX_NAME_CHARS = 100
#: Upper bound of one backoff pause between two attempts, in seconds.
MAX_BACKOFF_SECONDS = 30.0
#: Socket/read timeout of one Twilio API request, in seconds.
REQUEST_TIMEOUT_SECONDS = 15.0

_CHECK_PREFIX = "check:"
_ELLIPSIS = "..."  # ASCII on purpose: a non-GSM character would switch the SMS to UCS-2
_NOT_CONFIGURED = (
    "SMS alert not sent: Twilio is not configured (set TWILIO_* variables or create "
    "twilio_config.json; see twilio_config.example.json)"
)


# --------------------------------------------------------------------------- config


class TwilioConfigError(Exception):
    """The Twilio configuration is unusable: malformed file, missing or mistyped keys.

    The message names the file and the offending key(s), never a secret value.
    """


@dataclass(frozen=True)
class TwilioConfig:
    """Credentials and numbers for sending SMS alerts.

    ``auth_token`` is excluded from ``repr()``/``str()``. ``to`` is normalised
    to a tuple (a single string becomes a one-element tuple).
    """

    account_sid: str
    auth_token: str = field(repr=False)
    from_: str
    to: tuple[str, ...]

    def __post_init__(self) -> None:
        """Normalise ``to`` to a tuple of strings."""
        to: Any = self.to
        if isinstance(to, str):
            object.__setattr__(self, "to", (to,))
        elif not isinstance(to, tuple):
            object.__setattr__(self, "to", tuple(to))


@dataclass(frozen=True)
class AlertResult:
    """Outcome of :func:`send_sms`.

    ``status`` is ``"sent"`` (every recipient accepted), ``"partial"`` (some),
    ``"failed"`` (none) or ``"not_configured"``. ``recipients`` lists the
    numbers Twilio accepted the message for, in the same order as
    ``message_sids``. ``error`` explains the failures (per failed recipient),
    with secrets redacted; it is None when everything was sent.
    """

    status: str
    recipients: tuple[str, ...]
    message_sids: tuple[str, ...]
    error: str | None


def _split_numbers(value: str) -> list[str]:
    """Split a comma-separated list of phone numbers, dropping blanks."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _read_config_file(path: Path) -> dict[str, Any]:
    """Parse and type-check the config file; return the non-blank values it sets."""
    warn_if_world_readable(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TwilioConfigError(
            f"Cannot read Twilio config file {path}: {type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or 'not UTF-8 text'}"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg / position only: the document itself (with the token) is never quoted.
        raise TwilioConfigError(
            f"Twilio config file {path} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise TwilioConfigError(
            f"Twilio config file {path} must contain a JSON object with keys "
            f"{', '.join(_KEYS)}; found a JSON {type(data).__name__}"
        )

    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        hint = " (the sender key is spelled 'from_')" if "from" in unknown else ""
        logger.warning("Twilio config file %s: ignoring unknown key(s) %s%s",
                       path, ", ".join(map(repr, unknown)), hint)

    values: dict[str, Any] = {}
    for key in ("account_sid", "auth_token", "from_"):
        if key not in data or data[key] is None:
            continue
        value = data[key]
        if not isinstance(value, str):
            raise TwilioConfigError(
                f"Twilio config file {path}: key '{key}' must be a string, "
                f"got {type(value).__name__}"
            )
        if value.strip():
            values[key] = value.strip()

    if "to" in data and data["to"] is not None:
        to = data["to"]
        if isinstance(to, str):
            numbers = _split_numbers(to)
        elif isinstance(to, list) and all(isinstance(item, str) for item in to):
            numbers = [item.strip() for item in to if item.strip()]
        else:
            raise TwilioConfigError(
                f"Twilio config file {path}: key 'to' must be a string or a list of "
                f"strings, got {type(to).__name__}"
                + (" with non-string items" if isinstance(to, list) else "")
            )
        if numbers:
            values["to"] = tuple(numbers)
    return values


def load_twilio_config(
    project_dir: Path, environ: Mapping[str, str] | None = None
) -> TwilioConfig | None:
    """Resolve the Twilio settings; None when Twilio is not configured at all.

    The file is ``environ["TWILIO_CONFIG"]`` when set (it must exist), else
    ``project_dir / "twilio_config.json"`` (optional). It is a JSON object with
    keys ``account_sid``, ``auth_token``, ``from_`` and ``to`` (a string, maybe
    comma-separated, or a list of strings). ``TWILIO_ACCOUNT_SID``,
    ``TWILIO_AUTH_TOKEN``, ``TWILIO_FROM`` and ``TWILIO_TO`` (comma-separated
    list allowed) override the file key by key. Blank values count as unset.

    Raises:
        TwilioConfigError: ``TWILIO_CONFIG`` names a missing file; the file is
            unreadable, not JSON, or has wrongly typed keys; or some keys are
            still missing after merging file and environment.
    """
    env = os.environ if environ is None else environ
    explicit = (env.get(CONFIG_PATH_ENV) or "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise TwilioConfigError(
                f"{CONFIG_PATH_ENV} points to {path}, which does not exist or is not a file"
            )
        file_used = True
    else:
        path = Path(project_dir) / CONFIG_FILENAME
        file_used = path.is_file()

    values: dict[str, Any] = _read_config_file(path) if file_used else {}
    from_env: list[str] = []
    for key, var in ENV_VARS.items():
        raw = (env.get(var) or "").strip()
        if not raw:
            continue
        if key == "to":
            numbers = _split_numbers(raw)
            if not numbers:
                continue
            values[key] = tuple(numbers)
        else:
            values[key] = raw
        from_env.append(var)

    if "auth_token" in values:
        token = values["auth_token"]
        install_redaction([token, _basic_auth_value(values.get("account_sid", ""), token)])

    if not file_used and not from_env:
        logger.debug("Twilio not configured: no %s and no TWILIO_* variables", path)
        return None

    missing = [key for key in _KEYS if key not in values]
    if missing:
        source = f"config file {path}" if file_used else f"no config file ({path} absent)"
        raise TwilioConfigError(
            "Twilio is only partially configured: missing "
            + ", ".join(f"'{key}' (or {ENV_VARS[key]})" for key in missing)
            + f"; {source}, environment sets "
            + (", ".join(from_env) if from_env else "nothing")
        )
    logger.debug("Twilio config loaded from %s%s", path if file_used else "environment",
                 f" with overrides {', '.join(from_env)}" if file_used and from_env else "")
    return TwilioConfig(
        account_sid=values["account_sid"],
        auth_token=values["auth_token"],
        from_=values["from_"],
        to=values["to"],
    )


# --------------------------------------------------------------------------- message


def _one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces."""
    return " ".join(str(text).split())


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with ``...`` when cut."""
    if len(text) <= limit:
        return text
    if limit <= len(_ELLIPSIS):
        return text[:limit]
    return text[: limit - len(_ELLIPSIS)].rstrip() + _ELLIPSIS


def _summarise_message(message: str) -> str:
    """First meaningful line of a (possibly huge) error message, clipped.

    For a pasted Python traceback the first line ("Traceback (most recent call
    last):") says nothing, so the last non-blank line (the exception) is used.
    """
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]
    return _clip(_one_line(line), MAX_FAILURE_MESSAGE_CHARS)


def _failure_line(failure: Failure) -> str:
    """``- step: ErrorType: first line of the message``."""
    step = _clip(_one_line(failure.step), MAX_NAME_CHARS)
    error_type = _clip(_one_line(failure.error_type), MAX_NAME_CHARS)
    parts = [part for part in (error_type, _summarise_message(failure.message)) if part]
    return f"- {step}: {': '.join(parts)}" if parts else f"- {step}"


def _is_check(failure: Failure) -> bool:
    return str(failure.step).startswith(_CHECK_PREFIX)


def compose_failure_message(
    flow_name: str,
    run_id: str,
    failures: Sequence[Failure],
    logs_command: str = "python algorithm.py logs",
) -> str:
    """Build the SMS body announcing a failed run; never longer than MAX_SMS_CHARS.

    Layout::

        [TransactionEnrichmentFlow] run 1234 FAILED: 2 failure(s)
        - tag_transactions: ValueError: boom
        - check:completeness_annotations: CheckFailed: 12 rows without annotation
        Logs: python algorithm.py logs 1234/tag_transactions
        Checks: see check_results for run 1234

    One ``Logs:`` line per distinct failed flow step; failures whose step
    starts with ``check:`` get the single ``Checks:`` line instead. Each failure
    message is reduced to its first line and ~200 characters; if the text is
    still too long, trailing failures are dropped and replaced by
    ``... and N more``. The run id is kept verbatim (unless it alone exceeds the
    limit, in which case the text is cut hard at MAX_SMS_CHARS).
    """
    run_id = str(run_id)
    header = (f"[{_clip(_one_line(flow_name), MAX_NAME_CHARS)}] run {run_id} FAILED: "
              f"{len(failures)} failure(s)")
    command = _clip(_one_line(logs_command), 2 * MAX_NAME_CHARS)
    checks_line = (f"Checks: see check_results for run {run_id}"
                   if any(_is_check(f) for f in failures) else None)

    def render(shown: list[str], logs: list[str], hidden: int) -> str:
        lines = [header, *shown]
        if hidden:
            lines.append(f"... and {hidden} more")
        lines.extend(logs)
        if checks_line:
            lines.append(checks_line)
        return "\n".join(lines)

    shown: list[str] = []
    logs: list[str] = []
    logged_steps: set[str] = set()
    for index, failure in enumerate(failures):
        line = _failure_line(failure)
        new_logs = list(logs)
        step = _clip(_one_line(failure.step), MAX_NAME_CHARS)
        if not _is_check(failure) and step not in logged_steps:
            new_logs.append(f"Logs: {command} {run_id}/{step}")
        remaining = len(failures) - index - 1
        if len(render([*shown, line], new_logs, remaining)) > MAX_SMS_CHARS:
            break
        shown.append(line)
        logs = new_logs
        if not _is_check(failure):
            logged_steps.add(step)

    text = render(shown, logs, len(failures) - len(shown))
    if len(text) > MAX_SMS_CHARS:  # only with an absurdly long run id / logs command
        text = _clip(text, MAX_SMS_CHARS)
    return text


# --------------------------------------------------------------------------- sending


class _AttemptFailed(Exception):
    """Internal: one send attempt failed; carries whether to retry and why."""

    def __init__(self, reason: str, *, transient: bool, auth: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.auth = auth


def _basic_auth_value(account_sid: str, auth_token: str) -> str:
    """The base64 value of the HTTP Basic ``Authorization`` header Twilio receives."""
    return base64.b64encode(f"{account_sid}:{auth_token}".encode("utf-8")).decode("ascii")


def _secrets_of(config: TwilioConfig) -> list[str]:
    """Every form of the token that could leak: raw and inside the Basic auth value."""
    return [config.auth_token, _basic_auth_value(config.account_sid, config.auth_token)]


def _silence_twilio_http_logging() -> None:
    """Keep twilio's HTTP client from logging requests/headers below WARNING."""
    http_logger = logging.getLogger("twilio.http_client")
    if http_logger.getEffectiveLevel() < logging.WARNING:
        http_logger.setLevel(logging.WARNING)


def _build_client(config: TwilioConfig) -> Client:
    """The official client, with the default (requests based) HTTP client and a timeout."""
    return Client(
        config.account_sid,
        config.auth_token,
        http_client=TwilioHttpClient(timeout=REQUEST_TIMEOUT_SECONDS),
    )


def _classify(exc: Exception) -> _AttemptFailed:
    """Turn a Twilio/network exception into a reason and a retry decision."""
    if isinstance(exc, (TwilioRestException, TwilioServiceException)):
        status = int(getattr(exc, "status", 0) or 0)
        code = getattr(exc, "code", None)
        detail = getattr(exc, "msg", None) or getattr(exc, "title", "") or ""
        extra = getattr(exc, "detail", None)
        if extra:
            detail = f"{detail} - {extra}" if detail else str(extra)
        reason = f"HTTP {status}"
        if code and code != status:
            reason += f" (Twilio error {code})"
        if detail:
            reason += f": {_one_line(detail)}"
        if status in (401, 403):
            reason += " - authentication failed, check account_sid and auth_token"
        return _AttemptFailed(reason, transient=status >= 500 or status == 429,
                              auth=status in (401, 403))
    network = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
               requests.exceptions.ChunkedEncodingError)
    if isinstance(exc, network):
        return _AttemptFailed(f"network error: {type(exc).__name__}: {_one_line(str(exc))}",
                              transient=True)
    if isinstance(exc, TwilioException):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, network):  # a wrapped network error (other twilio versions)
            return _AttemptFailed(f"network error: {type(cause).__name__}: "
                                  f"{_one_line(str(cause))}", transient=True)
        return _AttemptFailed(f"Twilio error: {type(exc).__name__}: {_one_line(str(exc))}",
                              transient=False)
    if isinstance(exc, requests.exceptions.RequestException):
        return _AttemptFailed(f"HTTP client error: {type(exc).__name__}: "
                              f"{_one_line(str(exc))}", transient=False)
    return _AttemptFailed(f"unexpected response from Twilio: {type(exc).__name__}: "
                          f"{_one_line(str(exc))}", transient=False)


def _send_one(
    client: Client,
    config: TwilioConfig,
    recipient: str,
    body: str,
    *,
    max_attempts: int,
    backoff_seconds: float,
    sleep: Callable[[float], Any],
    secrets: list[str],
) -> str:
    """Send ``body`` to one recipient, retrying transient errors; return the message sid.

    Raises:
        _AttemptFailed: the last attempt's failure (permanent, or retries exhausted).
    """
    for attempt in range(1, max_attempts + 1):
        try:
            message = client.messages.create(body=body, from_=config.from_, to=recipient)
            return str(message.sid)
        except (TwilioException, requests.exceptions.RequestException,
                json.JSONDecodeError) as exc:
            failure = _classify(exc)
            failure.reason = redact(failure.reason, secrets)
        if not failure.transient or attempt == max_attempts:
            if failure.transient:
                failure.reason += f" (gave up after {max_attempts} attempts)"
            raise failure
        delay = min(backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        logger.warning("SMS to %s failed (attempt %d/%d): %s; retrying in %.1fs",
                       recipient, attempt, max_attempts, failure.reason, delay)
        sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def send_sms(
    config: TwilioConfig | None,
    body: str,
    *,
    client: Client | None = None,
    max_attempts: int = 3,
    backoff_seconds: float = 0.5,
    sleep: Callable[[float], Any] = time.sleep,
) -> AlertResult:
    """Send ``body`` by SMS to every number in ``config.to``; never raises for Twilio errors.

    One ``client.messages.create`` request per recipient, with the official
    Twilio client (built from ``config`` unless ``client`` is given). HTTP 5xx,
    429 and network errors/timeouts are retried up to ``max_attempts`` attempts
    in total, pausing ``backoff_seconds * 2**(n-1)`` (capped at
    MAX_BACKOFF_SECONDS) via ``sleep``; other errors (400 invalid number, 401
    bad credentials, ...) are not. After an authentication error (401/403) the
    remaining recipients are skipped, since they would fail the same way.

    With ``config`` None, logs one warning and returns status ``not_configured``.
    The auth token (raw and as Basic auth value) is redacted from the log
    output and from the result, and twilio's own HTTP logging is limited to
    warnings.

    Raises:
        ValueError: ``max_attempts`` < 1 or ``backoff_seconds`` < 0 (caller bug).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    if backoff_seconds < 0:
        raise ValueError(f"backoff_seconds must be >= 0, got {backoff_seconds}")
    if config is None:
        logger.warning(_NOT_CONFIGURED)
        return AlertResult("not_configured", (), (), "Twilio is not configured")

    secrets = _secrets_of(config)
    install_redaction(secrets)
    _silence_twilio_http_logging()
    if not config.to:
        logger.error("SMS alert not sent: no recipient configured ('to' / TWILIO_TO is empty)")
        return AlertResult("failed", (), (), "no recipient configured")
    if client is None:
        client = _build_client(config)

    sent_to: list[str] = []
    sids: list[str] = []
    errors: list[str] = []
    for index, recipient in enumerate(config.to):
        try:
            sid = _send_one(client, config, recipient, body, max_attempts=max_attempts,
                            backoff_seconds=backoff_seconds, sleep=sleep, secrets=secrets)
        except _AttemptFailed as failure:
            logger.error("SMS alert to %s failed: %s", recipient, failure.reason)
            errors.append(f"{recipient}: {failure.reason}")
            if failure.auth:
                skipped = config.to[index + 1:]
                if skipped:
                    logger.error("Skipping %d other recipient(s) after the authentication "
                                 "error", len(skipped))
                    errors.extend(f"{number}: skipped after authentication error"
                                  for number in skipped)
                break
            continue
        logger.info("SMS alert sent to %s (message sid %s)", recipient, sid)
        sent_to.append(recipient)
        sids.append(sid)

    if not errors:
        status = "sent"
    elif sids:
        status = "partial"
    else:
        status = "failed"
    error = redact("; ".join(errors), secrets) if errors else None
    return AlertResult(status, tuple(sent_to), tuple(sids), error)
