from __future__ import annotations

from api.auth.principal import Principal


def test_key_acts_only_on_its_projects() -> None:
    p = Principal("LTAIabc", frozenset({"demo", "photos"}))
    assert p.can_act_on("demo")
    assert p.can_act_on("photos")
    assert not p.can_act_on("other")
    assert not p.can_act_on("*")
    assert not p.is_admin


def test_star_grants_every_project_and_admin() -> None:
    p = Principal("LTAIabc", frozenset({"*"}))
    assert p.can_act_on("anything")
    assert p.is_admin


def test_empty_grants_nothing() -> None:
    p = Principal("LTAIabc", frozenset())
    assert not p.can_act_on("demo")
    assert not p.is_admin
