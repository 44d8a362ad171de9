"""The ingest package's errors: one family of the project's root, each documented."""
from __future__ import annotations

import inspect

import pytest

from enrich import errors, ingest

INPUT_ERRORS = ["InputFileError", "EmptyFileError", "MalformedHeaderError", "MissingColumnError",
                "DuplicateColumnError"]


def exported_errors() -> list[type[BaseException]]:
    return [value for name in ingest.__all__
            if inspect.isclass(value := getattr(ingest, name)) and issubclass(value, BaseException)]


def test_every_exported_error_derives_from_the_root_and_has_a_docstring() -> None:
    found = exported_errors()
    assert {cls.__name__ for cls in found} >= set(INPUT_ERRORS)
    for cls in found:
        assert issubclass(cls, errors.EnrichError), cls
        assert cls.__doc__ and cls.__doc__ != cls.__mro__[1].__doc__, cls


@pytest.mark.parametrize("name", INPUT_ERRORS)
def test_input_file_errors_are_permanent_input_errors(name: str) -> None:
    cls = getattr(ingest, name)
    assert issubclass(cls, ingest.InputFileError)
    assert issubclass(cls, errors.InputError) and issubclass(cls, errors.PermanentError)
    assert errors.is_permanent(cls("x.csv: problem. Fix."))


def test_a_missing_file_raises_a_permanent_input_error(tmp_path) -> None:
    with pytest.raises(errors.InputError) as caught:
        ingest.read_chunks(tmp_path / "missing.csv")
    assert errors.is_permanent(caught.value)
