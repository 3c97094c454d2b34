"""Providers from installed packages, through the ``paygate.providers`` entry point group.

Each test installs a distribution the way pip would leave it (a ``.dist-info`` with an
``entry_points.txt`` on ``sys.path``), so discovery runs through importlib.metadata itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from paygate.providers import build_provider, build_providers, build_router
from paygate.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def install(tmp_path: Path) -> Iterator[object]:
    added: list[str] = []

    def install(dist: str, entry_points: str) -> None:
        site = tmp_path / dist
        info = site / f"{dist}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(entry_points)
        sys.path.append(str(site))
        added.append(str(site))

    yield install
    for site in added:
        sys.path.remove(site)


def test_a_plugin_provider_is_found_by_name_and_routed(install):
    install("acme_paygate", "[paygate.providers]\nacme = tests.support.plugin_provider:build\n")
    settings = Settings(routes={"card": ["acme"], "*": ["sandbox-inprocess"]})
    assert build_provider(settings, "acme").name == "acme"
    providers = build_providers(settings)
    assert "acme" in providers
    assert build_router(settings, providers).route("card", "EUR") == ["acme"]


def test_an_unknown_name_lists_the_installed_plugins(install):
    install("acme_paygate", "[paygate.providers]\nacme = tests.support.plugin_provider:build\n")
    with pytest.raises(SystemExit, match=r"unknown provider 'adyen'.*plugins: acme"):
        build_provider(Settings(provider="adyen"))


def test_a_plugin_must_build_a_provider_of_its_own_name(install):
    install(
        "odd_paygate",
        "[paygate.providers]\nodd = tests.support.plugin_provider:build_misnamed\n",
    )
    with pytest.raises(SystemExit, match="named 'not-odd'"):
        build_provider(Settings(provider="odd"))


def test_a_plugin_must_say_how_long_its_provider_honours_a_key(install):
    install(
        "old_paygate",
        "[paygate.providers]\nold = tests.support.plugin_provider:build_unwindowed\n",
    )
    with pytest.raises(SystemExit, match="does not declare idempotency_window"):
        build_provider(Settings(provider="old"))


def test_a_plugin_must_say_how_far_its_status_query_lags_behind_a_charge(install):
    # Else a "no charge" from a lagging search would be taken as final: a late charge kept.
    install(
        "unlagged_paygate",
        "[paygate.providers]\nunlagged = tests.support.plugin_provider:build_unlagged\n",
    )
    with pytest.raises(SystemExit, match="does not declare status_search_lag"):
        build_provider(Settings(provider="unlagged"))


def test_a_plugin_must_say_how_far_its_refund_status_lags_behind_a_refund(install):
    # Else an operator could fail a withheld refund on a "no refund" its provider's status
    # answers only because it lags: the refund made, its amount released for another.
    install(
        "refund_unlagged_paygate",
        "[paygate.providers]\nnorefundlag = tests.support.plugin_provider:build_refund_unlagged\n",
    )
    with pytest.raises(SystemExit, match="does not declare refund_status_lag"):
        build_provider(Settings(provider="norefundlag"))


def test_two_packages_claiming_one_name_are_refused(install):
    line = "[paygate.providers]\ntwin = tests.support.plugin_provider:build\n"
    install("twin_one", line)
    install("twin_two", line)
    with pytest.raises(SystemExit, match="more than one installed package"):
        build_provider(Settings(provider="twin"))


def test_built_in_names_win_over_plugins(install):
    install("shadow", "[paygate.providers]\nstripe = tests.support.plugin_provider:build\n")
    with pytest.raises(SystemExit, match="PAYGATE_STRIPE_API_KEY"):
        build_provider(Settings(provider="stripe", abandon_after_s=6 * 3600))
