"""Secret redaction in strings and logs, and the config-file permission warning."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enrich.secrets import (
    RedactingFilter,
    install_redaction,
    redact,
    uninstall_redaction,
    warn_if_world_readable,
)

TOKEN = "f00dfeedcafe5ecre7t0ken0123456789"


@pytest.fixture(autouse=True)
def _clean_redaction():
    uninstall_redaction()
    yield
    uninstall_redaction()


def make_record(msg, args=(), exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("test", logging.ERROR, __file__, 1, msg, args, exc_info)


def redacting_filters(filterer: logging.Filterer) -> list[logging.Filter]:
    return [f for f in filterer.filters if isinstance(f, RedactingFilter)]


# --------------------------------------------------------------------------- redact


def test_redact_replaces_every_occurrence_of_each_secret():
    assert redact(f"a {TOKEN} b {TOKEN} c other", [TOKEN, "other"]) == "a *** b *** c ***"


def test_redact_ignores_empty_secrets():
    assert redact("nothing to hide", ["", TOKEN]) == "nothing to hide"
    assert redact("nothing to hide", []) == "nothing to hide"


def test_redact_masks_longer_secret_whole():
    assert redact("key=abcdef", ["abc", "abcdef"]) == "key=***"


def test_redact_accepts_any_iterable():
    assert redact("x-y", (s for s in ["x", "y"])) == "***-***"


@given(prefix=st.text(), suffix=st.text(),
       secret=st.text(alphabet="abcdef0123456789", min_size=8, max_size=40))
def test_redacted_text_never_contains_the_secret(prefix, suffix, secret):
    out = redact(prefix + secret + suffix + secret, [secret])
    assert secret not in out
    assert "***" in out


# --------------------------------------------------------------------------- filter


def test_filter_formats_args_then_redacts_and_clears_args():
    record = make_record("token=%s user=%s", (TOKEN, "bob"))
    assert RedactingFilter([TOKEN]).filter(record) is True
    assert record.msg == "token=*** user=bob"
    assert record.args == ()
    assert record.getMessage() == "token=*** user=bob"


def test_filter_keeps_percent_signs_safe_after_formatting():
    record = make_record("%s", ("100% " + TOKEN,))
    RedactingFilter([TOKEN]).filter(record)
    assert record.getMessage() == "100% ***"


def test_filter_redacts_exception_text():
    try:
        raise RuntimeError(f"bad token {TOKEN}")
    except RuntimeError:
        record = make_record("failed", exc_info=sys.exc_info())
    RedactingFilter([TOKEN]).filter(record)
    assert "RuntimeError: bad token ***" in record.exc_text
    formatted = logging.Formatter().format(record)
    assert TOKEN not in formatted and "bad token ***" in formatted


def test_filter_survives_mismatched_args():
    record = make_record("only %s %s", (TOKEN,))
    assert RedactingFilter([TOKEN]).filter(record) is True
    assert TOKEN not in record.getMessage()


def test_filter_add_secrets():
    f = RedactingFilter(["a1"])
    f.add_secrets(["bb22", ""])
    assert f.secrets == ("bb22", "a1")


def test_filter_on_a_handler_masks_output(caplog):
    redacting = RedactingFilter([TOKEN])
    caplog.handler.addFilter(redacting)  # pytest reuses this handler across tests
    try:
        logging.getLogger("enrich.test").error("auth %s", TOKEN)
    finally:
        caplog.handler.removeFilter(redacting)
    assert TOKEN not in caplog.text and "auth ***" in caplog.text


# --------------------------------------------------------------------------- install


def test_install_redaction_covers_propagating_loggers(caplog):
    install_redaction([TOKEN])
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("twilio.somewhere").debug("Authorization: %s", TOKEN)
        logging.getLogger().warning("root %s", TOKEN)
    assert TOKEN not in caplog.text
    assert caplog.text.count("***") == 2


def test_install_redaction_is_idempotent_and_accumulates(caplog):
    root = logging.getLogger()
    install_redaction([TOKEN])
    install_redaction([TOKEN])
    install_redaction(["second-secret"])
    assert len(redacting_filters(root)) == 1
    for handler in root.handlers:
        assert len(redacting_filters(handler)) == 1
    assert caplog.handler in root.handlers
    logging.getLogger("x").error("%s %s", TOKEN, "second-secret")
    assert caplog.records[-1].getMessage() == "*** ***"


def test_install_redaction_reaches_handlers_added_later():
    root = logging.getLogger()
    install_redaction([TOKEN])
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        install_redaction([])
        assert len(redacting_filters(handler)) == 1
    finally:
        root.removeHandler(handler)


def test_uninstall_redaction_detaches_filter():
    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    install_redaction([TOKEN])
    root.removeHandler(handler)  # left the root logger since: still cleaned up
    uninstall_redaction()
    assert redacting_filters(handler) == []
    assert redacting_filters(root) == []
    assert all(redacting_filters(h) == [] for h in root.handlers)


# --------------------------------------------------------------------------- permissions


def _file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "twilio_config.json"
    path.write_text("{}")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666])
def test_readable_by_group_or_others_warns(tmp_path, caplog, mode):
    path = _file(tmp_path, mode)
    with caplog.at_level(logging.WARNING):
        assert warn_if_world_readable(path) is True
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert str(path) in message and "chmod 600" in message


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_private_file_does_not_warn(tmp_path, caplog, mode):
    path = _file(tmp_path, mode)
    with caplog.at_level(logging.WARNING):
        assert warn_if_world_readable(path) is False
    assert caplog.records == []


def test_missing_file_does_not_warn(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert warn_if_world_readable(tmp_path / "absent.json") is False
    assert caplog.records == []
