"""Sealed secrets: what the operator seals only this gateway opens; the key file is 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.remote.sealed import (
    SealedError,
    gateway_keypair,
    is_sealed,
    key_path,
    open_sealed,
    seal,
)


def test_sealed_round_trip_and_key_file_private(tmp_path: Path) -> None:
    pub = gateway_keypair(tmp_path)
    assert gateway_keypair(tmp_path) == pub  # made once, then reused
    mode = stat.S_IMODE(key_path(tmp_path).stat().st_mode)
    assert mode == 0o600
    value = seal(pub, "s3cret-password")
    assert is_sealed(value) and "s3cret" not in value
    assert open_sealed(key_path(tmp_path), value) == "s3cret-password"


def test_sealed_for_another_gateway_is_refused(tmp_path: Path) -> None:
    other = gateway_keypair(tmp_path / "other")
    gateway_keypair(tmp_path / "me")
    value = seal(other, "token")
    with pytest.raises(SealedError, match="another gateway"):
        open_sealed(key_path(tmp_path / "me"), value)


def test_bad_public_key_says_what_to_do() -> None:
    with pytest.raises(SealedError, match="schwebe config pubkey"):
        seal("AAAA", "x")
    assert not is_sealed("plain") and not is_sealed(3)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown (CI runs as root)")
def test_pubkey_made_by_root_stays_readable_by_the_daemons_user(tmp_path: Path) -> None:
    """`sudo schwebe config pubkey` on a gateway whose data directory belongs to the daemon's
    user: the key it makes belongs to that user too, or the daemon could open no secret."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 4242, 4242)
    gateway_keypair(data)
    key = key_path(data)
    assert (key.stat().st_uid, key.stat().st_gid) == (4242, 4242)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
