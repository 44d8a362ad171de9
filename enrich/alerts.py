"""SMS alerting for failed flow runs, through Twilio.

Four parts, used by the flow's failure-check step:

* :func:`load_twilio_config` finds the Twilio settings (``twilio_config.json``
  or the file named by ``TWILIO_CONFIG``, overridden key by key by the
  ``TWILIO_*`` environment variables);
* :func:`compose_failure_message` turns the run's failures into one SMS body of
  at most :data:`MAX_SMS_CHARS` characters;
* :func:`send_sms` sends it to every recipient with the official Twilio client,
  retrying transient errors, and reports the outcome as an :class:`AlertResult`
  instead of raising;
* :func:`send_alert` does both ends: loads the configuration and sends, turning
  an unusable configuration into a ``not_configured`` result too.

Each send attempt that fails is logged once, in one short line (the number
masked, the Twilio error as its code and message, a network error as a few
words); :class:`AlertResult` names every intended recipient, whatever the
outcome. The auth token is kept out of ``repr``, error messages,
:class:`AlertResult` and log output (see :mod:`enrich.secrets`).
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import requests
import urllib3.exceptions
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from enrich.errors import AlertingError, ConfigurationError, PermanentError
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
    "SmsSendError",
    "TwilioConfig",
    "TwilioConfigError",
    "compose_failure_message",
    "load_twilio_config",
    "send_alert",
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
#: Longest reason kept for one failed recipient (Twilio's message, a network error).
MAX_REASON_CHARS = 300

_CHECK_PREFIX = "check:"
_ELLIPSIS = "..."  # ASCII on purpose: a non-GSM character would switch the SMS to UCS-2
_NOT_CONFIGURED = (
    "SMS alert not sent: Twilio is not configured (set TWILIO_* variables or create "
    "twilio_config.json; see twilio_config.example.json)"
)


# --------------------------------------------------------------------------- config


class TwilioConfigError(ConfigurationError, PermanentError):
    """The Twilio configuration is unusable: malformed file, missing or mistyped keys.

    Permanent: a bad configuration does not fix itself, so retrying is useless.
    The message is one line naming the file and the offending key(s), never a
    secret value. ``recipients`` holds the numbers that were configured all the
    same (``to`` / ``TWILIO_TO``), empty when none could be read, so that the
    alert that could not be sent is still recorded against them.
    """

    def __init__(self, message: str, *, recipients: Sequence[str] = ()) -> None:
        """Create the error; ``recipients`` are the numbers configured, if known."""
        super().__init__(message)
        self.recipients: tuple[str, ...] = tuple(recipients)


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
    """Outcome of :func:`send_sms` / :func:`send_alert`.

    ``status`` is ``"sent"`` (every recipient accepted), ``"partial"`` (some),
    ``"failed"`` (none) or ``"not_configured"`` (no usable configuration).

    ``recipients`` lists every number the alert was meant for, whatever the
    outcome: the configured ``to`` numbers (for ``not_configured``, those the
    broken configuration names; empty only when none is configured).
    ``delivered`` lists the numbers Twilio accepted the message for, in the
    same order as ``message_sids``.

    ``error`` is None when everything was sent, else ONE line with secrets
    masked: the reason alone when every recipient failed the same way
    (``Twilio error 20003: Authenticate (HTTP 401) - ...``), otherwise
    ``number: reason`` per failed recipient, joined by ``; ``.
    """

    status: str
    recipients: tuple[str, ...]
    message_sids: tuple[str, ...]
    error: str | None
    delivered: tuple[str, ...] = ()


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
            still missing after merging file and environment. Its
            ``recipients`` are the numbers configured all the same.
    """
    env = os.environ if environ is None else environ
    env_token = (env.get(ENV_VARS["auth_token"]) or "").strip()
    if env_token:  # masked before anything (a broken file, say) can be logged
        install_redaction([env_token, _basic_auth_value(
            (env.get(ENV_VARS["account_sid"]) or "").strip(), env_token)])
    env_recipients = tuple(_split_numbers(env.get(ENV_VARS["to"]) or ""))
    explicit = (env.get(CONFIG_PATH_ENV) or "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise TwilioConfigError(
                f"{CONFIG_PATH_ENV} points to {path}, which does not exist or is not a file",
                recipients=env_recipients,
            )
        file_used = True
    else:
        path = Path(project_dir) / CONFIG_FILENAME
        file_used = path.is_file()

    try:
        values: dict[str, Any] = _read_config_file(path) if file_used else {}
    except TwilioConfigError as exc:
        exc.recipients = env_recipients  # the file's own numbers are unknown: it is unusable
        raise
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
            + (", ".join(from_env) if from_env else "nothing"),
            recipients=values.get("to", ()),
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


class SmsSendError(AlertingError):
    """The SMS could not be sent to one recipient.

    Raised, for one recipient, when Twilio answers with a permanent error (bad
    credentials, invalid number...) or when a transient one (5xx, 429, network
    error) outlasts the attempts allowed. :func:`send_sms` catches it and
    reports it in :attr:`AlertResult.error`; it does not escape the module.

    ``reason`` is one short line with secrets masked (e.g. ``Twilio error
    20003: Authenticate (HTTP 401) - ...`` or ``connection refused``);
    ``transient`` tells whether another attempt might succeed, ``auth`` whether
    the credentials were refused (the other recipients would fail the same
    way), ``network`` whether Twilio was not reached at all, and ``attempts``
    how many attempts were made.
    """

    def __init__(self, reason: str, *, transient: bool, auth: bool = False,
                 network: bool = False, attempts: int = 1) -> None:
        """Create the error for one failed attempt (``attempts`` updated as retries go)."""
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.auth = auth
        self.network = network
        self.attempts = attempts

    def __str__(self) -> str:
        """The reason, as recorded: network errors say so, and exhausted retries too."""
        text = f"network error: {self.reason}" if self.network else self.reason
        if self.transient and self.attempts > 1:
            text += f"; gave up after {self.attempts} attempts"
        return text


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


def _clip_reason(text: str) -> str:
    """One line of at most MAX_REASON_CHARS characters."""
    return _clip(_one_line(text), MAX_REASON_CHARS)


_OBJECT_REPR = re.compile(r"<[^<>]* object at 0x[0-9a-fA-F]+>")
_TWILIO_PREFIX = re.compile(r"^Unable to (?:create|fetch|update|delete) record(?::\s*|$)")


def _twilio_failure(exc: TwilioRestException | TwilioServiceException) -> SmsSendError:
    """``Twilio error CODE: MESSAGE (HTTP STATUS)``; 5xx, 408 and 429 are transient.

    The message is Twilio's own (``Authenticate``), without the client's
    ``Unable to create record:`` prefix; a body without one (a proxy's HTML
    page) gives the HTTP reason phrase instead. The exception's ``str()`` is
    never used: on a terminal it is a multi-line coloured report.
    """
    status = int(getattr(exc, "status", 0) or 0)
    code = getattr(exc, "code", None)
    if isinstance(exc, TwilioServiceException) and hasattr(exc, "title"):
        message = str(exc.title or "")
        if getattr(exc, "detail", None):
            message = f"{message} - {exc.detail}" if message else str(exc.detail)
    else:
        message = _TWILIO_PREFIX.sub("", str(getattr(exc, "msg", "") or ""))
    if not message:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = "no details"
    message = _one_line(message)
    if code and code != status:
        reason = f"Twilio error {code}: {message} (HTTP {status})"
    else:
        reason = f"HTTP {status}: {message}"
    auth = status in (401, 403)
    if auth:
        reason += " - authentication failed, check account_sid and auth_token"
    return SmsSendError(_clip_reason(reason), transient=status >= 500 or status in (408, 429),
                        auth=auth)


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps: causes, contexts, and those held in its args
    or in a ``reason`` attribute (urllib3's MaxRetryError), breadth first."""
    queue: list[BaseException] = [exc]
    seen: set[int] = set()
    while queue and len(seen) < 20:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None),
                   *getattr(current, "args", ())]
        queue.extend(item for item in wrapped if isinstance(item, BaseException))


def _is_connect_timeout(exc: BaseException) -> bool:
    """A timeout while connecting. urllib3's NewConnectionError (any failure to
    connect, a refusal too) subclasses ConnectTimeoutError: it does not count."""
    return isinstance(exc, (requests.exceptions.ConnectTimeout,
                            urllib3.exceptions.ConnectTimeoutError)) \
        and not isinstance(exc, urllib3.exceptions.NewConnectionError)


#: Network conditions by exception, most specific first: (test, words).
_NETWORK_TYPES: tuple[tuple[Callable[[BaseException], bool], str], ...] = (
    (lambda e: isinstance(e, (urllib3.exceptions.NameResolutionError, socket.gaierror)),
     "host name lookup failed"),
    (lambda e: isinstance(e, ConnectionRefusedError), "connection refused"),
    (lambda e: isinstance(e, ConnectionResetError), "connection reset"),
    (lambda e: isinstance(e, (ConnectionAbortedError, http.client.RemoteDisconnected)),
     "connection closed by the server"),
    (lambda e: isinstance(e, (requests.exceptions.SSLError, ssl.SSLError)),
     "TLS handshake failed"),
    (lambda e: isinstance(e, (requests.exceptions.ProxyError, urllib3.exceptions.ProxyError)),
     "proxy error"),
    (_is_connect_timeout, "connection timed out"),
    (lambda e: isinstance(e, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)),
     "read timed out"),
    (lambda e: isinstance(e, requests.exceptions.ChunkedEncodingError),
     "connection broken mid-response"),
    (lambda e: isinstance(e, (requests.exceptions.Timeout, TimeoutError)), "timed out"),
)
#: The same conditions found in the text, when only a message is left (wrapped by hand).
_NETWORK_WORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("connect timeout", "connection timed out"), "connection timed out"),
    (("read timed out", "read timeout"), "read timed out"),
    (("name or service not known", "temporary failure in name resolution",
      "nodename nor servname", "failed to resolve", "getaddrinfo failed"), "host name lookup failed"),
    (("connection refused",), "connection refused"),
    (("connection reset",), "connection reset"),
    (("connection aborted", "remote end closed connection", "remotedisconnected"),
     "connection closed by the server"),
    (("timed out",), "timed out"),
)


def _network_words(exc: BaseException) -> str:
    """A few words naming a network failure (``connection refused``, ``read timed out``).

    Looks at the exception and everything it wraps (requests' ConnectionError
    holds urllib3's MaxRetryError, which holds NewConnectionError, caused by
    the socket's ConnectionRefusedError), then at their text; the
    400-character repr of the chain is never returned. An unknown condition
    gives the socket's own few words (``no route to host``) or the type name.
    """
    chain = list(_exception_chain(exc))
    for matches, words in _NETWORK_TYPES:
        if any(matches(item) for item in chain):
            return words
    text = " ".join(str(item) for item in chain).lower()
    for needles, words in _NETWORK_WORDS:
        if any(needle in text for needle in needles):
            return words
    for item in chain:
        if isinstance(item, OSError) and isinstance(item.strerror, str) and item.strerror:
            return _clip(_one_line(item.strerror.lower()), 80)
    innermost = chain[-1]
    detail = _clip(_one_line(_OBJECT_REPR.sub("", str(innermost))), 80)
    return f"{type(innermost).__name__}: {detail}" if detail else type(innermost).__name__


_NETWORK_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                   requests.exceptions.ChunkedEncodingError)


def _classify(exc: Exception) -> SmsSendError:
    """Turn a Twilio/network exception into a one-line reason and a retry decision."""
    if isinstance(exc, (TwilioRestException, TwilioServiceException)):
        return _twilio_failure(exc)
    if isinstance(exc, _NETWORK_ERRORS):
        return SmsSendError(_network_words(exc), transient=True, network=True)
    if isinstance(exc, TwilioException):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, _NETWORK_ERRORS):  # a wrapped network error (other twilio versions)
            return SmsSendError(_network_words(cause), transient=True, network=True)
        return SmsSendError(_clip_reason(f"Twilio client error: {type(exc).__name__}: {exc}"),
                            transient=False)
    if isinstance(exc, requests.exceptions.RequestException):
        return SmsSendError(f"HTTP client error: {type(exc).__name__}", transient=False)
    return SmsSendError(f"unexpected response from Twilio: {type(exc).__name__}",
                        transient=False)


def _mask_number(number: str) -> str:
    """A phone number for log lines: ``+33600000001`` -> ``+336...01``."""
    number = str(number)
    if len(number) <= 6:
        return "..." + number[-2:]
    return f"{number[:4]}...{number[-2:]}"


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

    Every failed attempt is logged once, in one line: a warning with the
    pause when it will be retried, an error saying why not otherwise.

    Raises:
        SmsSendError: the last attempt's failure (permanent, or retries exhausted).
    """
    masked = _mask_number(recipient)
    for attempt in range(1, max_attempts + 1):
        try:
            message = client.messages.create(body=body, from_=config.from_, to=recipient)
            return str(message.sid)
        except (TwilioException, requests.exceptions.RequestException,
                json.JSONDecodeError) as exc:
            failure = _classify(exc)
        failure.reason = redact(failure.reason, secrets)
        failure.attempts = attempt
        line = f"SMS attempt {attempt}/{max_attempts} to {masked} failed: {failure.reason}"
        if not failure.transient:
            logger.error("%s; not retried (permanent error)", line)
            raise failure
        if attempt == max_attempts:
            logger.error("%s; giving up", line)
            raise failure
        delay = min(backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        logger.warning("%s; retrying in %.1f s", line, delay)
        sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _error_line(failures: list[tuple[str, str]], recipients: Sequence[str]) -> str | None:
    """``AlertResult.error``: one line, the reason alone when all failed alike."""
    if not failures:
        return None
    reasons = {reason for _, reason in failures}
    if len(failures) == len(recipients) and len(reasons) == 1:
        return reasons.pop()
    return "; ".join(f"{number}: {reason}" for number, reason in failures)


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
    408, 429 and network errors/timeouts are retried up to ``max_attempts``
    attempts in total, pausing ``backoff_seconds * 2**(n-1)`` (capped at
    MAX_BACKOFF_SECONDS) via ``sleep``; other errors (400 invalid number, 401
    bad credentials, ...) are not. After an authentication error (401/403) the
    remaining recipients are skipped, since they would fail the same way.

    Each failed attempt is logged once, in one line (``SMS attempt 2/3 to
    +336...01 failed: connection refused; retrying in 1.0 s``), never with a
    traceback. The result names every recipient in ``config.to`` whatever the
    outcome (see :class:`AlertResult`).

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

    delivered: list[str] = []
    sids: list[str] = []
    failures: list[tuple[str, str]] = []
    for index, recipient in enumerate(config.to):
        try:
            sid = _send_one(client, config, recipient, body, max_attempts=max_attempts,
                            backoff_seconds=backoff_seconds, sleep=sleep, secrets=secrets)
        except SmsSendError as failure:
            failures.append((recipient, str(failure)))
            if failure.auth:
                skipped = config.to[index + 1:]
                if skipped:
                    logger.error("SMS alert: skipping %d other recipient(s) after the "
                                 "authentication error", len(skipped))
                    failures.extend((number, "skipped after authentication error")
                                    for number in skipped)
                break
            continue
        logger.info("SMS alert sent to %s (message sid %s)", _mask_number(recipient), sid)
        delivered.append(recipient)
        sids.append(sid)

    if not failures:
        status = "sent"
    elif sids:
        status = "partial"
    else:
        status = "failed"
    error = _error_line(failures, config.to)
    return AlertResult(status, tuple(config.to), tuple(sids),
                       redact(error, secrets) if error else None, tuple(delivered))


def send_alert(
    body: str,
    project_dir: Path,
    *,
    environ: Mapping[str, str] | None = None,
    client: Client | None = None,
    max_attempts: int = 3,
    backoff_seconds: float = 0.5,
    sleep: Callable[[float], Any] = time.sleep,
) -> AlertResult:
    """Load the Twilio configuration (see :func:`load_twilio_config`) and send ``body``.

    An unusable configuration does not raise: it is logged in one error line
    and gives a ``not_configured`` result whose ``recipients`` are the numbers
    that configuration names (empty when none could be read) and whose
    ``error`` is the configuration error, one line without secret. Otherwise
    the result is :func:`send_sms`'s, with the same keyword arguments.

    Raises:
        ValueError: ``max_attempts`` < 1 or ``backoff_seconds`` < 0 (caller bug).
    """
    try:
        config = load_twilio_config(project_dir, environ)
    except TwilioConfigError as exc:
        reason = _one_line(redact(str(exc)))
        logger.error("SMS alert not sent: %s", reason)
        return AlertResult("not_configured", exc.recipients, (), reason)
    return send_sms(config, body, client=client, max_attempts=max_attempts,
                    backoff_seconds=backoff_seconds, sleep=sleep)
