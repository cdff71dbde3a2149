"""Liquid templates: checked at save (with positions), sandboxed, bounded; campaign
definitions refused with the field named."""

from __future__ import annotations

import pytest

from nudge.engage.campaigns import parse_campaign
from nudge.engage.templates import (
    TRACK_PREFIX,
    UNSUBSCRIBE_PLACEHOLDER,
    TemplateError,
    compile_template,
)
from nudge.errors import ValidationError


def render(src: str, **ctx: object) -> str:
    return compile_template(src, "t").render(ctx)


def test_profile_event_data_and_defaults() -> None:
    src = ("Hi {{ profile.first_name | default: 'there' }}, {{ event.items | size }} items "
           "for {{ data.total | times: 2 }} in {{ campaign.name }}")
    ctx = {"event": {"items": [1, 2, 3]}, "data": {"total": 21}, "campaign": {"name": "C"}}
    assert render(src, profile={"first_name": "Ann"}, **ctx) == "Hi Ann, 3 items for 42 in C"
    assert render(src, profile={}, **ctx) == "Hi there, 3 items for 42 in C"


def test_memo_never_mixes_recipients() -> None:
    t = compile_template("{{ profile.name }}-{% for x in event.list %}{{ x }}{% endfor %}", "t")
    assert t.render({"profile": {"name": "a"}, "event": {"list": [1, 2]}}) == "a-12"
    assert t.render({"profile": {"name": "b"}, "event": {"list": [1, 2]}}) == "b-12"
    assert t.render({"profile": {"name": "a"}, "event": {"list": [3]}}) == "a-3"


@pytest.mark.parametrize(("src", "where"), [
    ("Hello {{ profile.name }", "line 1, column 7"),
    ("line one\n{% if %}yes{% endif %}", "line 2, column"),
    ("{% for x in profile.list %}{{ x }}", "line 1"),
    ("ok\n\n  {{ profile.name | nosuchfilter }}", "line 3"),
])
def test_syntax_errors_are_refused_with_position(src: str, where: str) -> None:
    with pytest.raises(TemplateError) as e:
        compile_template(src, "content.email.subject")
    assert where in e.value.message
    assert e.value.field == "content.email.subject"


def test_unknown_variables_are_refused_with_position() -> None:
    with pytest.raises(TemplateError) as e:
        compile_template("Hi\n  {{ profle.first_name }}", "content.sms.body")
    assert "unknown variable 'profle'" in e.value.message
    assert "line 2, column 6" in e.value.message


def test_missing_values_render_empty_not_error() -> None:
    assert render("[{{ profile.nope.deeper }}]", profile={}) == "[]"


class Secretive:
    password = "hunter2"  # noqa: S105

    def __init__(self) -> None:
        self.token = "t0k3n"  # noqa: S105


def test_no_python_attribute_is_reachable() -> None:
    src = ("{{ profile.obj.password }}{{ profile.obj.token }}{{ profile.obj.__class__ }}"
           "{{ profile.__class__.__init__.__globals__ }}{{ profile.items }}{{ profile.keys }}")
    assert render(src, profile={"obj": Secretive()}) == ""


@pytest.mark.parametrize("src", ["{% include 'secrets.txt' %}", "{% render 'x' %}",
                                 "{% include '/etc/passwd' %}"])
def test_no_file_includes(src: str) -> None:
    with pytest.raises(TemplateError) as e:
        compile_template(src, "content.email.html")
    assert "not allowed" in e.value.message


def test_loops_and_output_are_bounded() -> None:
    with pytest.raises(TemplateError, match="limit"):
        render("{% for i in (1..1000000) %}x{% endfor %}")
    with pytest.raises(TemplateError, match="limit"):
        render("{% for i in (1..9000) %}{{ data.s }}{% endfor %}", data={"s": "y" * 100})


def test_link_helpers_become_placeholders() -> None:
    out = render("{{ 'https://shop.example/a?b=1' | track }} {{ unsubscribe_url }}",
                 unsubscribe_url=UNSUBSCRIBE_PLACEHOLDER)
    assert out == f"{TRACK_PREFIX}https://shop.example/a?b=1\x00 {UNSUBSCRIBE_PLACEHOLDER}"


BASE = {"name": "c", "audience": {"segment_id": 1}, "channels": ["sms"],
        "content": {"sms": {"body": "hi"}}}


@pytest.mark.parametrize(("patch", "field"), [
    ({"channels": ["pigeon"]}, "channels"),
    ({"content": {"sms": {"body": "{{ x"}}}, "content.sms.body"),
    ({"content": {"sms": {}}}, "content.sms.body"),
    ({"variants": [{"name": "A", "percent": 50}, {"name": "B", "percent": 40}]}, "variants"),
    ({"variants": [{"name": "A", "percent": 90}], "control_percent": 10,
      "kind": "recurring"}, "schedule"),
    ({"kind": "trigger"}, "trigger"),
    ({"kind": "trigger", "trigger": {"event": "A", "where": [{"property": "x", "op": "zz"}]}},
     "trigger.where[0].op"),
    ({"quiet_hours": {"start": "25:00", "end": "08:00"}}, "quiet_hours.start"),
    ({"caps": [{"max": 1, "per": {"fortnights": 1}}]}, "caps[0].per.fortnights"),
    ({"schedule": {"cron": "* * *"}, "kind": "recurring"}, "schedule.cron"),
    ({"channels": ["webhook"], "content": {"webhook": {"body": "{}"}}}, "webhook_url"),
    ({"audience": None}, "audience"),
])
def test_campaign_definitions_name_the_bad_field(patch: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_campaign({**BASE, **patch})
    assert e.value.field == field, e.value.message


def test_variant_split_is_deterministic_and_proportional() -> None:
    spec = parse_campaign({**BASE, "control_percent": 10, "variants": [
        {"name": "A", "percent": 60}, {"name": "B", "percent": 30,
                                       "content": {"sms": {"body": "B!"}}}]})
    got = [spec.variant_for(7, u) for u in range(20_000)]
    names = [("control" if v is None else v.name) for v in got]
    assert got == [spec.variant_for(7, u) for u in range(20_000)]
    share = {n: names.count(n) / len(names) for n in ("control", "A", "B")}
    assert abs(share["control"] - 0.1) < 0.015
    assert abs(share["A"] - 0.6) < 0.015
    assert abs(share["B"] - 0.3) < 0.015
