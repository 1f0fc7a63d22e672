"""Admin rules without a server: key settings, the admin listener, revocation, route placement."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from eventpipe.errors import Conflict, EventpipeError, QueryFailed
from eventpipe.settings import ApiKeyConfig, Settings, is_loopback, split_listen
from producers.admin import admin_routes, create_admin_app
from producers.app import create_app
from producers.auth import KeyStore, hash_key
from tests.fakes import ScriptedPublisher

DIGEST = "a" * 64


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"product": ""}, "product"),
        ({"product": "Shop"}, "product"),
        ({"product": "1shop"}, "product"),
        ({"product": "sh op"}, "product"),
        ({"product": "x" * 65}, "product"),
        ({"product": 3}, "product"),
        ({"product": "p", "source": "Web"}, "source"),
        ({"product": "p", "rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"product": "p", "rate_limit_per_minute": "60"}, "rate_limit_per_minute"),
        ({"product": "p", "rate_limit_per_minute": True}, "rate_limit_per_minute"),
        ({"product": "p", "rate_limit_per_minute": 2.5}, "rate_limit_per_minute"),
        ({"product": "p", "sha256": "abc"}, "sha256"),
        ({"product": "p", "extra": 1}, "extra"),
    ],
)
def test_a_key_config_names_the_field_it_refuses(fields: dict[str, Any], bad: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ApiKeyConfig(**{"sha256": DIGEST, **fields})
    assert exc.value.errors()[0]["loc"][0] == bad


def test_a_key_config_takes_what_the_readme_and_tests_use() -> None:
    for product in ("dev", "bench", "t_0123456789ab", "a-b_c1", "x" * 64):
        assert ApiKeyConfig(sha256=DIGEST, product=product, rate_limit_per_minute=10**9)


@pytest.mark.parametrize(
    ("listen", "ok"),
    [
        ("127.0.0.1:9001", True),
        ("127.8.9.10:9001", True),
        ("localhost:9001", True),
        ("[::1]:9001", True),
        ("0.0.0.0:9001", False),
        ("10.1.2.3:9001", False),
        ("[::]:9001", False),
        ("admin.internal:9001", False),
    ],
)
def test_the_admin_listener_is_loopback_unless_allowed(listen: str, ok: bool) -> None:
    if ok:
        assert Settings(admin_listen=listen).admin_address[1] == 9001
    else:
        with pytest.raises(ValidationError, match="EVENTPIPE_ADMIN_ALLOW_REMOTE"):
            Settings(admin_listen=listen)
        assert Settings(admin_listen=listen, admin_allow_remote=True).admin_listen == listen


@pytest.mark.parametrize("listen", ["9001", "127.0.0.1", "127.0.0.1:x", ":9001", "h:70000"])
def test_a_listen_address_is_host_and_port(listen: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_listen(listen)
    assert not is_loopback("example.com")


def test_a_configured_key_is_not_revoked_in_one_replica() -> None:
    configured, minted = "ep_configured", "ep_minted"
    keys = KeyStore([ApiKeyConfig(sha256=hash_key(configured), product="p")], 100)
    keys.add(minted, "p")
    with pytest.raises(Conflict) as exc:
        keys.revoke(configured)
    assert exc.value.status == 409 and exc.value.field == "key"
    assert keys.authenticate(f"Bearer {configured}").product == "p"
    assert keys.revoke(minted) is True
    assert keys.revoke(minted) is False
    with pytest.raises(EventpipeError, match="invalid API key"):
        keys.authenticate(f"Bearer {minted}")


def _paths(routes: Any) -> set[str]:
    return {r.path for r in routes}


def test_the_public_app_has_admin_routes_only_when_given_them() -> None:
    settings = Settings(admin_token="t")
    keys = KeyStore([], 100)
    public = create_app(settings, ScriptedPublisher(), keys)
    assert not {p for p in _paths(public.routes) if p.startswith("/admin")}
    routes = admin_routes(settings, keys, None)
    assert _paths(routes) == {"/admin/keys", "/admin/query", "/admin/forget"}
    admin_app = create_admin_app(settings, keys)
    assert _paths(admin_app.routes) == {"/admin/keys", "/admin/query", "/admin/forget"}
    with_admin = create_app(settings, ScriptedPublisher(), keys, admin=routes)
    assert {"/admin/keys", "/admin/query"} <= _paths(with_admin.routes)
    assert admin_routes(Settings(), keys, None) == [], "no token, no admin routes"


def test_dev_refuses_to_serve_admin_routes_on_a_public_address() -> None:
    from launch.dev import run_dev

    with pytest.raises(SystemExit, match="EVENTPIPE_ADMIN_ALLOW_REMOTE"):
        run_dev(Settings(host="0.0.0.0"))


def test_query_errors_are_bad_requests_of_their_own() -> None:
    assert QueryFailed("x").body() == {"error": "query_failed", "message": "x"}
