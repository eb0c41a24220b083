from __future__ import annotations

from importlib import resources

import pytest

from auth_service.errors import ErrorCode, WeakPasswordError
from auth_service.services.password_policy import (
    MAX_BYTES,
    MIN_LENGTH,
    check_password,
    common_passwords,
)

EMAIL = "jane.doe-smith@example.com"
STRONG = "kq8-zv2!mw7p"  # exactly 12 characters, not on the list


def refusal(password: str, email: str | None = EMAIL) -> WeakPasswordError:
    with pytest.raises(WeakPasswordError) as caught:
        check_password(password, email=email)
    assert caught.value.code is ErrorCode.WEAK_PASSWORD
    assert caught.value.status_code == 422
    return caught.value


def test_exactly_twelve_characters_is_accepted() -> None:
    assert len(STRONG) == MIN_LENGTH == 12
    check_password(STRONG, email=EMAIL)
    check_password(STRONG, email=None)


def test_eleven_characters_is_refused() -> None:
    error = refusal(STRONG[:11])
    assert "at least 12 characters" in error.description


def test_length_counts_characters_not_bytes() -> None:
    check_password("ééééééééééé" + "ü", email=None)  # 12 characters, 24 bytes
    assert "at least 12" in refusal("€" * 11).description  # 33 bytes, 11 characters


@pytest.mark.parametrize(
    ("password", "size"),
    [
        ("é" * 512, 1024),  # 2-byte characters
        ("😀" * 256, 1024),  # 4-byte characters
        ("a" * 1022 + "é", 1024),
        ("€" * 341 + "a", 1024),  # 3-byte characters
    ],
)
def test_1024_bytes_is_accepted(password: str, size: int) -> None:
    assert len(password.encode("utf-8")) == size == MAX_BYTES
    check_password(password, email=EMAIL)


@pytest.mark.parametrize(
    "password",
    ["é" * 512 + "a", "😀" * 256 + "a", "a" * 1023 + "é", "€" * 341 + "é"],
)
def test_over_1024_bytes_is_refused(password: str) -> None:
    assert len(password.encode("utf-8")) > MAX_BYTES
    assert len(password) <= 1024  # refused for its bytes, not its characters
    assert "at most 1024 bytes" in refusal(password).description


def test_a_password_that_is_not_valid_unicode_is_refused() -> None:
    assert "Unicode" in refusal("twelve chars \ud800 here").description


@pytest.mark.parametrize(
    "password",
    [EMAIL, EMAIL.upper(), "Jane.Doe-Smith@Example.com", "jane.doe-smith", "JANE.DOE-SMITH"],
)
def test_the_email_or_its_local_part_is_refused(password: str) -> None:
    error = refusal(password)
    assert "email" in error.description
    assert password not in error.description


def test_the_email_rule_needs_the_whole_local_part() -> None:
    check_password("jane.doe-smith1", email=EMAIL)
    check_password(EMAIL + "x", email=EMAIL)
    check_password("jane.doe-smith", email=None)  # no email: only the other rules


@pytest.mark.parametrize(
    "password", ["qwerty123456", "QWERTY123456", "1Qaz2Wsx3Edc", "LeaveMeAlone", "sonyericsson"]
)
def test_common_passwords_are_refused_case_insensitively(password: str) -> None:
    error = refusal(password)
    assert "most commonly used" in error.description
    assert password not in error.description


def test_the_list_has_exactly_10000_distinct_lower_case_entries() -> None:
    entries = common_passwords()
    assert len(entries) == 10_000
    assert all(entry == entry.lower() and entry == entry.strip() for entry in entries)
    assert {"123456", "password", "qwerty"} <= entries


def test_the_list_file_is_package_data_one_ranked_entry_a_line() -> None:
    data = resources.files("auth_service").joinpath("data").joinpath("common-passwords.tsv")
    rows = [line.split("\t") for line in data.read_text(encoding="utf-8").splitlines()]
    assert [int(rank) for rank, _ in rows] == list(range(1, 10_001))
    words = [word for _, word in rows]
    assert len(words) == len(set(words)) == 10_000
    assert words[:3] == ["123456", "password", "12345678"]  # most common first


def test_the_list_is_loaded_once() -> None:
    assert common_passwords() is common_passwords()
