"""Rule matching on its own: order, globs, claim values and their types, nested claims, email_verified."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.auth.rules import Rules
from server.auth.settings import RuleSettings, check_glob
from server.identity import Role


def rules(*specs: dict[str, Any]) -> Rules:
    return Rules([RuleSettings.model_validate(spec) for spec in specs])


def role_of(r: Rules, subject: str, **claims: Any) -> str | None:
    grant = r.match(subject, claims)
    return None if grant is None else grant.role.label


def test_first_match_wins_and_default_deny() -> None:
    r = rules(
        {"subject": "system:serviceaccount:ci:admin", "role": "admin"},
        {"subject": "system:serviceaccount:ci:*", "role": "writer", "namespaces": ["team.*"]},
        {"subject": "system:serviceaccount:*", "role": "reader"},
    )
    assert role_of(r, "system:serviceaccount:ci:admin") == "admin"
    grant = r.match("system:serviceaccount:ci:builder", {})
    assert grant is not None and (grant.role, grant.namespaces, grant.rule) == (Role.WRITER, ("team.*",), 1)
    assert role_of(r, "system:serviceaccount:other:x") == "reader"
    assert role_of(r, "repo:org/repo:ref:refs/heads/main") is None
    assert role_of(r, "SYSTEM:serviceaccount:ci:admin") is None  # globs are case-sensitive


def test_subject_and_claims_must_both_hold() -> None:
    r = rules({"subject": "repo:org/*", "claims": {"event_name": "push"}, "role": "writer"})
    assert role_of(r, "repo:org/a:ref:refs/heads/main", event_name="push") == "writer"
    assert role_of(r, "repo:org/a:ref:refs/heads/main", event_name="pull_request") is None
    assert role_of(r, "repo:fork/a:ref:refs/heads/main", event_name="push") is None


def test_claim_lists_allow_any_of_their_values() -> None:
    r = rules({"claims": {"ref": ["refs/heads/main", "refs/heads/release"]}, "role": "writer"})
    assert role_of(r, "s", ref="refs/heads/release") == "writer"
    assert role_of(r, "s", ref="refs/heads/feature") is None
    assert role_of(r, "s") is None  # a missing claim never holds


def test_list_valued_claims_hold_when_a_member_is_allowed() -> None:
    r = rules({"claims": {"groups": "cache-admins"}, "role": "admin"})
    assert role_of(r, "s", groups=["devs", "cache-admins"]) == "admin"
    assert role_of(r, "s", groups=["devs"]) is None


@pytest.mark.parametrize(
    ("allowed", "actual", "holds"),
    [(True, True, True), (True, "true", False), (1, True, False), (True, 1, False), ("1", 1, False), (7, 7, True)],
)
def test_claim_values_compare_with_their_type(allowed: Any, actual: Any, holds: bool) -> None:
    r = rules({"claims": {"flag": allowed}, "role": "reader"})
    assert (role_of(r, "s", flag=actual) is not None) is holds


def test_nested_claims_by_path_even_through_dotted_names() -> None:
    r = rules(
        {"claims": {"kubernetes.io.namespace": "periodic", "kubernetes.io.serviceaccount.name": "warm-up"},
         "role": "writer"},
    )
    k8s = {"kubernetes.io": {"namespace": "periodic", "serviceaccount": {"name": "warm-up", "uid": "u"}}}
    assert role_of(r, "s", **k8s) == "writer"
    k8s["kubernetes.io"]["namespace"] = "test-pods"
    assert role_of(r, "s", **k8s) is None
    assert role_of(r, "s", **{"kubernetes.io.namespace": "periodic"}) is None  # the other claim is missing


def test_email_rules_need_a_verified_email() -> None:
    r = rules({"claims": {"email": "admin@p.iam.gserviceaccount.com"}, "role": "admin"})
    assert role_of(r, "1", email="admin@p.iam.gserviceaccount.com", email_verified=True) == "admin"
    assert role_of(r, "1", email="admin@p.iam.gserviceaccount.com", email_verified=False) is None
    assert role_of(r, "1", email="admin@p.iam.gserviceaccount.com", email_verified="true") is None
    assert role_of(r, "1", email="admin@p.iam.gserviceaccount.com") is None


@pytest.mark.parametrize("pattern", ["*", "team.[ab]", "team.[!x]*", "a[]]b", "[!]]", "x?"])
def test_good_globs(pattern: str) -> None:
    assert check_glob(pattern) == pattern


@pytest.mark.parametrize("pattern", ["", "team.[ab", "[]", "[!]", "a]b[c"])
def test_bad_globs(pattern: str) -> None:
    with pytest.raises(ValueError):
        check_glob(pattern)


def test_a_rule_needs_something_to_match() -> None:
    with pytest.raises(ValidationError, match="a rule needs subject or claims"):
        RuleSettings.model_validate({"role": "reader", "claims": {}})
