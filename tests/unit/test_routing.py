import pytest
from pydantic import ValidationError

from paygate.providers import build_providers, build_router
from paygate.settings import Settings
from providers.charge_only import ChargeOnlyProvider
from providers.registry import Providers, UnknownProviderError
from providers.routing import Router, RoutingError

pytestmark = pytest.mark.unit


def test_the_most_specific_route_wins():
    router = Router({"card:EUR": ["a", "b"], "card": ["c"], "*": ["d", "a"]})
    assert router.route("card", "EUR") == ["a", "b"]
    assert router.route("card", "USD") == ["c"]
    assert router.route("wallet", "EUR") == ["d", "a"]
    assert router.provider_names() == ["a", "b", "c", "d"]


def test_a_catch_all_router_sends_everything_to_one_provider():
    router = Router.catch_all("sandbox")
    assert router.route("bank_transfer", "GBP") == ["sandbox"]


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({"card": ["a"]}, "default route"),
        ({"*": []}, "no provider"),
        ({"*": ["a", "b", "a"]}, "twice"),
        ({"*": "a"}, "list"),
        ({"*": [""]}, "empty provider name"),
        ({"*": ["a"], "cheque": ["b"]}, "unknown payment method"),
        ({"*": ["a"], "card:eur": ["b"]}, "3 capital letters"),
        ({"*": ["a"], "card:": ["b"]}, "3 capital letters"),
    ],
)
def test_malformed_routes_are_refused(routes, message):
    with pytest.raises(RoutingError, match=message):
        Router(routes)


class FakeProvider(ChargeOnlyProvider):
    """The registry tests never move money."""

    def __init__(self, name, fail_start=False):
        super().__init__()
        self._name = name
        self.fail_start = fail_start
        self.started = 0
        self.stopped = 0

    @property
    def name(self):
        return self._name

    async def start(self):
        if self.fail_start:
            raise RuntimeError("cannot start")
        self.started += 1

    async def stop(self):
        self.stopped += 1

    async def charge(self, request):
        raise NotImplementedError


def test_the_registry_finds_providers_by_name_and_refuses_unknown_ones():
    a, b = FakeProvider("a"), FakeProvider("b")
    providers = Providers.of(a, b)
    assert providers.get("b") is b
    assert providers["a"] is a
    assert "a" in providers
    assert "c" not in providers
    assert list(providers) == ["a", "b"]
    assert len(providers) == 2
    with pytest.raises(UnknownProviderError, match="unknown payment provider 'c'"):
        providers.get("c")


def test_the_registry_refuses_two_providers_of_one_name_and_an_empty_list():
    with pytest.raises(ValueError, match="two providers are named 'a'"):
        Providers.of(FakeProvider("a"), FakeProvider("a"))
    with pytest.raises(ValueError, match="no payment provider"):
        Providers([])


async def test_the_registry_starts_and_stops_all_and_stop_is_safe_twice():
    a, b = FakeProvider("a"), FakeProvider("b")
    providers = Providers.of(a, b)
    await providers.start_all()
    assert (a.started, b.started) == (1, 1)
    await providers.stop_all()
    await providers.stop_all()
    assert (a.stopped, b.stopped) == (2, 2)


async def test_a_failed_start_stops_the_providers_already_started():
    a, b = FakeProvider("a"), FakeProvider("b", fail_start=True)
    with pytest.raises(RuntimeError, match="cannot start"):
        await Providers.of(a, b).start_all()
    assert (a.started, a.stopped) == (1, 1)


def test_without_routes_every_payment_goes_to_the_provider_setting():
    settings = Settings(provider="sandbox-inprocess")
    assert settings.effective_routes == {"*": ["sandbox-inprocess"]}
    providers = build_providers(settings)
    # The in-process sandbox answers to "sandbox", as it always did.
    assert list(providers) == ["sandbox"]
    assert build_router(settings, providers).route("card", "EUR") == ["sandbox"]


def test_routes_and_sandbox_urls_are_read_as_json(monkeypatch):
    monkeypatch.setenv("PAYGATE_ROUTES", '{"card:EUR": ["sandbox", "sandbox-2"]}')
    monkeypatch.setenv("PAYGATE_SANDBOX_URLS", '{"sandbox-2": "http://127.0.0.1:8082"}')
    settings = Settings()
    assert settings.routes == {"card:EUR": ["sandbox", "sandbox-2"]}
    # No "*" route: PAYGATE_PROVIDER is the default.
    assert settings.effective_routes["*"] == ["sandbox"]
    providers = build_providers(settings)
    assert list(providers) == ["sandbox", "sandbox-2"]
    router = build_router(settings, providers)
    assert router.route("card", "EUR") == ["sandbox", "sandbox-2"]
    assert router.route("card", "USD") == ["sandbox"]


def test_malformed_routes_in_the_settings_are_refused():
    with pytest.raises(ValidationError, match="no provider"):
        Settings(routes={"*": []})
    with pytest.raises(ValidationError, match="not a sandbox name"):
        Settings(sandbox_urls={"other": "http://127.0.0.1:1"})


def test_a_routed_provider_that_is_not_known_is_refused():
    with pytest.raises(SystemExit, match="unknown provider 'sandbox-9'"):
        build_providers(Settings(routes={"*": ["sandbox", "sandbox-9"]}))


def test_two_routed_names_for_one_provider_are_refused():
    with pytest.raises(SystemExit, match="two providers are named 'sandbox'"):
        build_providers(Settings(routes={"*": ["sandbox", "sandbox-inprocess"]}))


def test_stripe_in_a_route_needs_the_stripe_windows():
    with pytest.raises(ValidationError, match="PAYGATE_ABANDON_AFTER_S"):
        Settings(routes={"*": ["sandbox", "stripe"]}, stripe_api_key="sk_test_123")
