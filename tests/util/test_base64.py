"""Base64 as QEMU 7.2 decodes it (values captured with ringbuf-write/read)."""

from __future__ import annotations

import pytest

from util.base64 import g_base64_decode, g_base64_encode, qbase64_decode


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("YWJj", b"abc"),
        ("YW", b""),  # a partial group is dropped
        ("Y", b""),
        ("", b""),
        ("YWJj\nZGVm", b"abcdef"),  # newlines are skipped
        ("YW=J", b"a\t"),  # '=' inside a group is a zero digit
        ("AP8A/w==", b"\x00\xff\x00\xff"),
        ("wqk=", "\u00a9".encode()),
    ],
)
def test_decode_like_glib(text, data):
    assert qbase64_decode(text) == data


@pytest.mark.parametrize("text", ["!!!", "YWJj ZGVm", "YW\0J", "é"])
def test_invalid_characters(text):
    with pytest.raises(ValueError, match=r"^Base64 data contains invalid characters$"):
        qbase64_decode(text)


def test_glib_skips_what_qemu_would_refuse():
    assert g_base64_decode("YW Jj") == b"abc"


def test_encode():
    assert g_base64_encode(b"abc") == "YWJj"
    assert g_base64_encode(b"\x00\xff") == "AP8="
