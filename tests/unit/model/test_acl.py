"""ACL rules: parsing with field errors, longest-prefix decisions, deny wins ties."""

from __future__ import annotations

import pytest

from moorage.model import SpecError
from moorage.model.acl import Level, Rule, decide


def rules(*texts: str) -> list[Rule]:
    return [Rule.parse(text) for text in texts]


def test_rules_parse_and_print_back() -> None:
    rule = Rule.parse("kv:app/=write")
    assert (rule.resource, rule.prefix, rule.level) == ("kv", "app/", Level.WRITE)
    assert str(rule) == "kv:app/=write"
    assert str(Rule.parse("node=read")) == "node=read"
    assert Rule.parse("service:=deny").prefix == ""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("kv:app/", "RESOURCE[:PREFIX]=LEVEL"),
        ("disk:x=read", "unknown resource 'disk'"),
        ("kv:app/=admin", "unknown level 'admin'"),
        ("=read", "RESOURCE[:PREFIX]=LEVEL"),
    ],
)
def test_bad_rules_name_the_field_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as caught:
        Rule.parse(text, "rule[2]")
    assert caught.value.errors[0].field == "rule[2]" and problem in caught.value.errors[0].message


def test_the_longest_matching_prefix_decides() -> None:
    granted = rules("kv:=read", "kv:app/=write", "kv:app/secret/=deny")
    assert decide(granted, "kv", "other/x", Level.READ)
    assert not decide(granted, "kv", "other/x", Level.WRITE)
    assert decide(granted, "kv", "app/x", Level.WRITE)
    assert not decide(granted, "kv", "app/secret/key", Level.READ)
    assert not decide(granted, "service", "web", Level.READ)  # another resource: nothing


def test_no_rule_denies_and_deny_wins_a_tie() -> None:
    assert not decide([], "kv", "a", Level.READ)
    assert not decide(rules("kv:a=write", "kv:a=deny"), "kv", "a", Level.READ)
    assert not decide(rules("kv:a=deny", "kv:a=write"), "kv", "ab", Level.READ)
    assert decide(rules("kv:app/=read"), "kv", "app/", Level.READ)
    assert not decide(rules("kv:app/=read"), "kv", "app", Level.READ)  # a prefix, not a dir
