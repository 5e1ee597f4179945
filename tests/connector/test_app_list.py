"""The sealed app list a zone's connector hands its members (connector/app_list.py): only the
cluster secret opens it, for its own zone's key; anything else is refused, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.connector.app_list import AppListError, open_app_list, seal_app_list
from trackmesh.connector.apps import App, AppRegistry

SECRET = "cluster-test-secret"
KEY = "tm/apps/1"
APPS = [App("acme", "acme-secret-0123456789", "http://127.0.0.1:9/hook", "whsec_" + "A" * 44),
        App("globex", "globex-secret-0123456789", None, "whsec_" + "B" * 44)]  # fmt: skip


def test_a_sealed_list_opens_with_the_cluster_secret_for_its_zone() -> None:
    sealed = seal_app_list(SECRET, KEY, APPS, 1_800_000_000_000)
    assert b"acme-secret" not in sealed  # encrypted, not only signed
    assert open_app_list(SECRET, KEY, sealed) == (1_800_000_000_000, APPS)
    registry = AppRegistry(App("", "root-secret-0123456789", None, "whsec_" + "C" * 44))
    registry.replace(open_app_list(SECRET, KEY, sealed)[1])
    assert registry.app_for_secret("acme-secret-0123456789") == "acme"
    assert [a.app_id for a in registry.all()] == ["", "acme", "globex"]


def test_another_secret_another_zone_or_an_altered_byte_is_refused() -> None:
    sealed = seal_app_list(SECRET, KEY, APPS, 1)
    with pytest.raises(AppListError, match="does not verify"):
        open_app_list("another-cluster-secret", KEY, sealed)
    with pytest.raises(AppListError, match="does not verify"):
        open_app_list(SECRET, "tm/apps/2", sealed)  # zone 1's list replayed to zone 2
    altered = bytearray(sealed)
    altered[-1] ^= 1
    with pytest.raises(AppListError):
        open_app_list(SECRET, KEY, bytes(altered))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_with_a_clear_error(data: bytes) -> None:
    with pytest.raises(AppListError):
        open_app_list(SECRET, KEY, data)


@given(st.lists(st.tuples(st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(str.isprintable),
                          st.text(min_size=16, max_size=40)), max_size=5, unique_by=lambda t: t[0]),
       st.integers(0, 2**53))  # fmt: skip
def test_any_valid_list_round_trips(entries: list[tuple[str, str]], issued: int) -> None:
    apps = [App(app_id, secret, None, "whsec_" + "D" * 44) for app_id, secret in entries]
    assert open_app_list(SECRET, KEY, seal_app_list(SECRET, KEY, apps, issued)) == (issued, apps)
