"""Database passwords kept out of output: redact_url, register_secret/register_url, and
URL passwords masked in log records and by redact()."""
from __future__ import annotations

import logging

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enrich.secrets import (
    REDACTED,
    install_redaction,
    redact,
    redact_url,
    redact_urls,
    register_secret,
    register_url,
    registered_secrets,
    uninstall_redaction,
    url_password,
)

PASSWORD = "Pg-s3cr3t-pa55"
URL = f"postgresql://enrich:{PASSWORD}@db.internal:5432/ledger"
SAFE_URL = "postgresql://enrich:***@db.internal:5432/ledger"


@pytest.fixture(autouse=True)
def _clean_redaction():
    uninstall_redaction()
    yield
    uninstall_redaction()


# --------------------------------------------------------------------------- redact_url


@pytest.mark.parametrize("url, expected", [
    (URL, SAFE_URL),
    ("postgresql://u:p%40ss%3Aw%2Frd%25@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgres://u:pw@h/db?sslmode=require", "postgres://u:***@h/db?sslmode=require"),
    ("postgresql://u:pw@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
    ("postgresql://u:pw@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
    ("postgresql://u%40corp:pw@h/db", "postgresql://u%40corp:***@h/db"),
    # hand-written URLs with unencoded special characters in the password
    ("postgresql://u:p@ss@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://u:p:ss@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://u:pa/ss@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://u:12/34@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://u:50%off@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p#ss@h/db", "postgresql://u:***@h/db"),
    # a password given as a query parameter (libpq accepts it)
    ("postgresql://h/db?user=u&password=pw&sslmode=require",
     "postgresql://h/db?user=u&password=***&sslmode=require"),
    ("postgresql://h/db?sslpassword=pw", "postgresql://h/db?sslpassword=***"),
])
def test_redact_url_masks_the_password_only(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize("url", [
    "postgresql://u@h:5432/db",
    "postgresql://h:5432/db",
    "postgresql:///db?host=/var/run/postgresql",
    "postgresql://u:@h/db",  # an empty password: nothing to hide
    "sqlite:///data/enrich.db",
    "/data/enrich.db",
    "not a url at all",
    "",
])
def test_redact_url_leaves_urls_without_password_unchanged(url):
    assert redact_url(url) == url
    assert url_password(url) is None


def test_url_password_is_decoded():
    assert url_password("postgresql://u:p%40ss%2F1@h/db") == "p@ss/1"
    assert url_password(URL) == PASSWORD


# host names and database names as found in practice; user names may need encoding
_hosts = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
                   st.sampled_from(["127.0.0.1", "[::1]", "db.internal"]))
_dbs = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
_ports = st.integers(min_value=1, max_value=65535)
_special_text = st.text(alphabet=st.sampled_from("@:/%?#&= abcXYZ019-_.~éß"), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(user=st.text(min_size=1, max_size=20), password=st.one_of(st.text(min_size=1, max_size=40),
                                                                  _special_text),
       host=_hosts, port=_ports, db=_dbs, query=st.sampled_from(["", "?sslmode=require"]))
def test_encoded_password_never_survives_and_the_rest_is_kept(user, password, host, port, db, query):
    encoded_user, encoded_password = quote(user, safe=""), quote(password, safe="")
    url = f"postgresql://{encoded_user}:{encoded_password}@{host}:{port}/{db}{query}"
    # exactly the parts around the password, as written: the password (encoded or
    # not) is gone, and only the rest of the URL can spell it by chance
    assert redact_url(url) == f"postgresql://{encoded_user}:{REDACTED}@{host}:{port}/{db}{query}"
    assert url_password(url) == password


@settings(max_examples=300, deadline=None)
@given(user=st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True),
       password=st.text(alphabet=st.sampled_from("@:/%abcXYZ019-_.!$*"), min_size=1, max_size=30),
       host=_hosts, port=_ports, db=_dbs)
def test_unencoded_special_characters_in_password_never_survive(user, password, host, port, db):
    url = f"postgresql://{user}:{password}@{host}:{port}/{db}"
    out = redact_url(url)
    assert out == f"postgresql://{user}:{REDACTED}@{host}:{port}/{db}"
    assert url_password(url) is not None


@settings(max_examples=200, deadline=None)
@given(user=st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True), host=_hosts, port=_ports, db=_dbs,
       with_user=st.booleans(), query=st.sampled_from(["", "?sslmode=require", "?host=/tmp"]))
def test_urls_without_password_are_unchanged(user, host, port, db, with_user, query):
    url = f"postgresql://{user + '@' if with_user else ''}{host}:{port}/{db}{query}"
    assert redact_url(url) == url


@settings(max_examples=200, deadline=None)
@given(before=st.text(alphabet=st.characters(blacklist_characters=":"), max_size=40),
       separator=st.sampled_from([" ", "\n", "'", '"', "(", "=", "<"]),
       after=st.text(alphabet=st.characters(blacklist_characters="@?#"), max_size=40),
       password=st.text(alphabet=st.sampled_from("@:/%abcXYZ019-_"), min_size=6, max_size=30))
def test_redact_masks_a_url_password_inside_any_text(before, separator, after, password):
    text = f"{before}{separator}postgresql://app:{password}@h:5432/db {after}"
    out = redact(text, [])
    assert f"postgresql://app:{REDACTED}@h:5432/db" in out
    assert f"app:{password}@" not in out


# --------------------------------------------------------------------------- registering


def test_register_secret_masks_logs_and_default_redact(caplog):
    register_secret("hunter2-api-key")
    with caplog.at_level(logging.INFO):
        logging.getLogger("enrich.db").info("key is %s", "hunter2-api-key")
    assert "hunter2-api-key" not in caplog.text and "key is ***" in caplog.text
    assert redact("echo hunter2-api-key") == "echo ***"
    assert "hunter2-api-key" in registered_secrets()


def test_register_secret_ignores_empty_and_rejects_non_strings():
    register_secret("")
    assert registered_secrets() == ()
    with pytest.raises(TypeError):
        register_secret(None)  # type: ignore[arg-type]


def test_register_url_registers_the_encoded_and_decoded_password(caplog):
    url = "postgresql://app:p%40ss%2Fw0rd@h:5432/db"
    assert register_url(url) == "postgresql://app:***@h:5432/db"
    assert {"p%40ss%2Fw0rd", "p@ss/w0rd"} <= set(registered_secrets())
    with caplog.at_level(logging.INFO):
        # a driver message quoting the password outside any URL
        logging.getLogger("psycopg").error('password "p@ss/w0rd" rejected')
    assert "p@ss/w0rd" not in caplog.text and 'password "***" rejected' in caplog.text


def test_register_url_without_password_registers_nothing():
    assert register_url("postgresql://app@h/db") == "postgresql://app@h/db"
    assert registered_secrets() == ()


def test_redact_with_explicit_secrets_ignores_registered_ones():
    register_secret("registered-one")
    assert redact("registered-one other-one", ["other-one"]) == "registered-one ***"


# --------------------------------------------------------------------------- logs


def test_url_password_is_masked_in_logs_even_unregistered(caplog):
    install_redaction([])
    with caplog.at_level(logging.INFO):
        logging.getLogger("enrich.storage").error("cannot open %s", URL)
    assert PASSWORD not in caplog.text
    assert f"cannot open {SAFE_URL}" in caplog.text


def test_url_password_is_masked_in_a_logged_exception(caplog):
    install_redaction([])
    try:
        raise ConnectionError(f"could not connect to {URL}: timeout")
    except ConnectionError:
        with caplog.at_level(logging.INFO):
            logging.getLogger("enrich.storage").exception("database unavailable")
    assert PASSWORD not in caplog.text
    assert SAFE_URL in caplog.text  # in the formatted traceback
    record = caplog.records[-1]
    assert PASSWORD not in logging.Formatter().format(record)


def test_redact_urls_handles_several_urls():
    text = f"primary {URL}, replica postgresql://r:other-pw@replica/db"
    assert redact_urls(text) == f"primary {SAFE_URL}, replica postgresql://r:***@replica/db"
    assert redact_urls("no url here") == "no url here"


def test_exception_message_rendered_through_redact():
    exc = RuntimeError(f"connect {URL} failed")
    assert PASSWORD not in redact(str(exc))


def test_uninstall_forgets_registered_secrets():
    register_secret("forget-me")
    uninstall_redaction()
    assert registered_secrets() == ()
    assert redact("forget-me") == "forget-me"


