from __future__ import annotations

import pytest

from eventpipe.naming import InvalidName, NameFormat, normalize, split_unified


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("user.signed_up", ("user", "signed_up")),
        ("billing:invoice_paid", ("billing", "invoice_paid")),
        ("project_created", ("project", "created")),
        ("user_profile.updated", ("user_profile", "updated")),
        ("a:b.c_d", None),  # action 'b.c_d' has a dot: invalid
        ("ticket.updated", ("ticket", "updated")),
        ("paywall_viewed", ("paywall", "viewed")),
    ],
)
def test_unified_split(event: str, expected: tuple[str, str] | None) -> None:
    if expected is None:
        with pytest.raises(InvalidName):
            split_unified(event)
    else:
        assert split_unified(event) == expected


def test_the_document_tables() -> None:
    assert (
        normalize(event_type="billing", action="invoice_paid").canonical == "billing_invoice_paid"
    )
    n = normalize(event_type="project_created")
    assert (n.event_type, n.action, n.format, n.deprecated) == (
        "project",
        "created",
        NameFormat.LEGACY,
        True,
    )
    u = normalize(event="user.signed_up")
    assert (u.canonical, u.format, u.deprecated) == ("user_signed_up", NameFormat.UNIFIED, False)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"event_type": "Project", "action": "created"}, "event_type"),
        ({"event_type": "project", "action": "Created"}, "action"),
        ({"event_type": "project", "action": "1created"}, "action"),
        ({"event_type": "project"}, "action"),
        ({"event": "signup"}, "event"),
        ({"event": ".created"}, "event"),
        ({"event": "user.signed_up", "event_type": "user"}, "event_type"),
        ({}, "event"),
        ({"event_type": "x" * 65, "action": "y"}, "event_type"),
    ],
)
def test_invalid_names_name_their_field(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidName) as err:
        normalize(**kwargs)
    assert err.value.field == field
