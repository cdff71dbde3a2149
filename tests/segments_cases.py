"""A small fixed dataset and segment definitions covering every condition kind and operator,
as functions of ``now``. The golden tests use them at a fixed moment (SQL snapshots); the
HTTP tests upload the same people through the real upload API and evaluate the same
definitions over HTTP. Expected members come from the reference evaluator."""

from __future__ import annotations

import datetime as dt
from typing import Any

from segments_reference import Event, Person, Reference

H, DAY = 3600, 86400
EVIL = "x'); DROP TABLE events; --"
W30 = {"last": {"days": 30}}

# (identity, profile, email, phone, token kinds, [(event, ts, properties)])
PersonRow = tuple[str, dict[str, Any], str | None, str | None, list[str],
                  list[tuple[str, float, dict[str, Any]]]]


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


def people(now: int) -> list[PersonRow]:
    soon = dt.datetime.fromtimestamp(now + 3 * DAY, dt.UTC)
    birthday = int(soon.replace(year=soon.year - 40).timestamp())  # in 3 days, 40 years ago
    return [
        ("ann", {"City": "Paris", "Age": 34, "VIP": True, "Tags": ["gold", "5"],
                 "Birthday": f"$D_{birthday}", "MSG-email": True, "Plan": "pro"},
         "ann@example.com", "+15550001", ["fcm"],
         [("Charged", now - 2 * DAY, {"Amount": 600, "Currency": "EUR", "Items": ["a", "b"]}),
          ("Charged", now - 3 * DAY, {"Amount": 700, "Currency": "EUR"}),
          ("Charged", now - 4 * DAY, {"Amount": 800, "Currency": "USD"}),
          ("Added To Cart", now - 5 * H, {"Amount": 20}),
          ("App Launched", now - 60 * DAY, {"Platform": "ios", "Paid": True,
                                            "App Version": "2.1.0", "Country": "FR"})]),
        ("bob", {"City": "Berlin", "Age": 19, "VIP": False, "MSG-email": False,
                 "Signed Up": f"$D_{now - 45 * DAY}"}, "bob@example.com", None, ["webpush"],
         [("Charged", now - 20 * DAY, {"Amount": 100, "Currency": "EUR"}),
          ("Added To Cart", now - 10 * H, {"Amount": 5}),
          ("Charged", now - 9 * H, {"Amount": 50, "Currency": "EUR"}),
          ("App Uninstalled", now - 2 * H, {}),
          ("App Launched", now - 50 * DAY, {"Platform": "android", "Paid": False,
                                            "App Version": "1.9.3", "Country": "DE"})]),
        ("cyd", {"City": "Paris", "Age": 52, "Tags": ["silver"], "Plan": "free",
                 "Signed Up": f"$D_{now - 5 * DAY}", "Renewal": f"$D_{now + 2 * DAY}"},
         None, "+15550003", ["apns"],
         [("Added To Cart", now - 30 * H, {"Amount": 70}),
          ("App Launched", now - 2 * DAY, {"Platform": "ios", "App Version": "2.0.1",
                                           "Country": "FR"})]),
        ("dan", {"City": "it's \"quoted\"", "Plan": EVIL}, None, None, [],
         [(EVIL, now - DAY, {EVIL: EVIL, "Amount": 1}),
          ("Charged", now - 100 * DAY, {"Amount": 5000, "Currency": "EUR"})]),
        ("eve", {"Age": 34.5, "Tags": []}, "eve@example.com", None, [], []),
        ("fay", {}, None, None, [],
         [("Charged", now - DAY, {"Amount": 6000, "Currency": "GBP"}),
          ("Charged", now - DAY, {"Amount": 10, "Currency": "GBP"})]),
    ]


def upload_records(now: int) -> list[dict[str, Any]]:
    """The people as upload API records (/1/upload ``d``), events in this order."""
    items: list[dict[str, Any]] = []
    for key, props, email, phone, tokens, events in people(now):
        data = dict(props)
        if email:
            data["Email"] = email
        if phone:
            data["Phone"] = phone
        items.append({"type": "profile", "identity": key, "profileData": data,
                      "msgId": f"{key}-p"})
        items += [{"type": "token", "identity": key, "tokenData": {"type": k, "id": f"{key}-{k}"},
                   "msgId": f"{key}-{k}"} for k in tokens]
        items += [{"type": "event", "identity": key, "evtName": name, "evtData": d, "ts": ts,
                   "msgId": f"{key}-e{i}"} for i, (name, ts, d) in enumerate(events)]
    return items


def reference(data_now: int, now: float, saved: dict[int, Any]) -> Reference:
    """The reference over ``people(data_now)``, evaluated at ``now``."""
    rows = people(data_now)
    flat = [(k, name, ts, d) for k, *_, evs in rows for name, ts, d in evs]
    return Reference([Person(k, p, e, ph, frozenset(t)) for k, p, e, ph, t, _ in rows],
                     [Event(k, name, ts, seq, d) for seq, (k, name, ts, d) in enumerate(flat)],
                     now, saved=saved)


def saved_definitions() -> dict[str, Any]:
    """Two segments the cases refer to (as ``{"segment": {"id": ...}}``)."""
    return {"charged_30d": {"did": {"event": "Charged", "window": W30}},
            "paris": {"profile": {"property": "City", "op": "eq", "value": "Paris"}}}


def cases(now: int, charged_30d: int = 1, paris: int = 2) -> dict[str, Any]:
    """At least one definition per condition kind and per filter operator."""
    return {
        # did
        "did_default": {"did": {"event": "Charged"}},
        "did_at_least_where_window": {"did": {
            "event": "Charged", "count": {"op": ">=", "value": 3}, "window": W30,
            "where": [{"property": "Amount", "op": "gt", "value": 500}]}},
        "did_more_than": {"did": {"event": "Charged", "count": {"op": ">", "value": 1}}},
        "did_exactly": {"did": {"event": "Charged", "count": {"op": "=", "value": 2}}},
        "did_exactly_zero": {"did": {"event": "Charged", "count": {"op": "=", "value": 0},
                                     "window": W30}},
        "did_at_most": {"did": {"event": "Charged", "count": {"op": "<=", "value": 1},
                                "window": W30}},
        "did_fewer_than": {"did": {"event": "Charged", "count": {"op": "<", "value": 3}}},
        "did_fewer_than_zero": {"did": {"event": "Charged", "count": {"op": "<", "value": 0}}},
        "did_not_exactly": {"did": {"event": "Charged", "count": {"op": "!=", "value": 1}}},
        "did_at_least_zero": {"did": {"event": "Charged", "count": {"op": ">=", "value": 0}}},
        "did_between": {"did": {"event": "Charged", "window": {"between": [
            iso(now - 14 * DAY), now - 2 * DAY]}}},
        "did_first_days": {"did": {"event": "Charged",
                                   "window": {"first_days_after_first_seen": 3}}},
        "did_unknown_event": {"did": {"event": "Never Happened"}},
        # did_not
        "did_not_window": {"did_not": {"event": "Charged", "window": {"last": {"hours": 12}}}},
        "did_not_unknown_event": {"did_not": {"event": "Never Happened"}},
        # a complement (rows not deduplicated) that NOT makes the positive root
        "not_did_not": {"not": {"did_not": {"event": "Charged"}}},
        # aggregate
        "aggregate_sum": {"aggregate": {"event": "Charged", "property": "Amount", "fn": "sum",
                                        "op": ">=", "value": 5000,
                                        "window": {"last": {"days": 90}}}},
        "aggregate_sum_at_most": {"aggregate": {"event": "Charged", "property": "Amount",
                                                "fn": "sum", "op": "<=", "value": 100}},
        "aggregate_avg": {"aggregate": {"event": "Charged", "property": "Amount", "fn": "avg",
                                        "op": ">", "value": 600}},
        "aggregate_min": {"aggregate": {"event": "Charged", "property": "Amount", "fn": "min",
                                        "op": "<", "value": 100}},
        "aggregate_max": {"aggregate": {"event": "Charged", "property": "Amount", "fn": "max",
                                        "op": "=", "value": 800,
                                        "where": [{"property": "Currency", "op": "eq",
                                                   "value": "USD"}]}},
        "aggregate_count_distinct": {"aggregate": {"event": "Charged", "property": "Currency",
                                                   "fn": "count_distinct", "op": "!=",
                                                   "value": 1}},
        "aggregate_unknown_property": {"aggregate": {"event": "Charged", "property": "Nope",
                                                     "fn": "sum", "op": "<", "value": 1}},
        # rfm / intent (nudge/predict): RFM computed live; no goal is trained here
        "rfm_segment": {"rfm_segment": {"in": ["champions", "loyal", "hibernating"]}},
        "rfm_segment_no_purchases": {"rfm_segment": {"in": ["no_purchases", "new_customers"]}},
        "rfm_score": {"rfm_score": {"r": [4, 5], "m": [1, 2, 3]}},
        "intent_bucket_untrained": {"intent_bucket": {"goal": 1, "in": ["most_likely"]}},
        "intent_score_untrained": {"intent_score": {"goal": 1, "op": ">=", "value": 0.5}},
        # first_time
        "first_time_last": {"first_time": {"event": "Charged",
                                           "window": {"last": {"days": 7}}}},
        "first_time_between": {"first_time": {"event": "App Launched", "window": {
            "between": [now - 55 * DAY, now - 40 * DAY]}}},
        "first_time_first_days": {"first_time": {
            "event": "Added To Cart", "window": {"first_days_after_first_seen": 1}}},
        # last_did
        "last_did_less_than": {"last_did": {"event": "Added To Cart",
                                            "less_than": {"hours": 8}}},
        "last_did_more_than": {"last_did": {"event": "Added To Cart",
                                            "more_than": {"hours": 8}}},
        # sequence
        "sequence_then_within": {"sequence": {"first": {"event": "Added To Cart"},
                                              "then": {"event": "Charged"},
                                              "within": {"hours": 2}}},
        "sequence_within_boundary": {"sequence": {"first": {"event": "Added To Cart"},
                                                  "then": {"event": "Charged"},
                                                  "within": {"hours": 1},
                                                  "window": {"last": {"days": 2}}}},
        "sequence_abandoned": {"sequence": {
            "first": {"event": "Added To Cart"}, "then": {"event": "Charged"},
            "window": {"last": {"hours": 24}}, "then_happened": False}},
        "sequence_where_any_time": {"sequence": {
            "first": {"event": "App Launched", "where": [{"property": "Platform", "op": "eq",
                                                          "value": "ios"}]},
            "then": {"event": "Charged", "where": [{"property": "Currency", "op": "in",
                                                    "value": ["EUR", "USD"]}]}}},
        # profile: one per operator and type
        "profile_string_eq": {"profile": {"property": "City", "op": "eq", "value": "Paris"}},
        "profile_string_neq": {"profile": {"property": "City", "op": "neq", "value": "Paris"}},
        "profile_string_in": {"profile": {"property": "City", "op": "in",
                                          "value": ["Paris", "Berlin"]}},
        "profile_string_not_in": {"profile": {"property": "City", "op": "not_in",
                                              "value": ["Paris"]}},
        "profile_string_contains": {"profile": {"property": "City", "op": "contains",
                                                "value": "ar"}},
        "profile_string_not_contains": {"profile": {"property": "City", "op": "not_contains",
                                                    "value": "ar"}},
        "profile_string_starts_with": {"profile": {"property": "City", "op": "starts_with",
                                                   "value": "Be"}},
        "profile_exists": {"profile": {"property": "City", "op": "exists"}},
        "profile_not_exists": {"profile": {"property": "City", "op": "not_exists"}},
        "profile_number_gt": {"profile": {"property": "Age", "op": "gt", "value": 30}},
        "profile_number_gte": {"profile": {"property": "Age", "op": "gte", "value": 34}},
        "profile_number_lt": {"profile": {"property": "Age", "op": "lt", "value": 34.5}},
        "profile_number_lte": {"profile": {"property": "Age", "op": "lte", "value": 34.5}},
        "profile_number_between": {"profile": {"property": "Age", "op": "between",
                                               "value": [19, 34]}},
        "profile_number_in": {"profile": {"property": "Age", "op": "in", "value": [19, 52]}},
        "profile_boolean_eq": {"profile": {"property": "VIP", "op": "eq", "value": True}},
        "profile_boolean_neq": {"profile": {"property": "VIP", "op": "neq", "value": True}},
        "profile_date_gt_iso": {"profile": {"property": "Signed Up", "op": "gt",
                                            "value": iso(now - 44 * DAY)}},
        "profile_date_between": {"profile": {"property": "Signed Up", "op": "between",
                                             "value": [now - 50 * DAY, now - 40 * DAY]}},
        "profile_date_before_days_ago": {"profile": {"property": "Signed Up",
                                                     "op": "before_days_ago", "value": 30}},
        "profile_date_after_days_ago": {"profile": {"property": "Signed Up",
                                                    "op": "after_days_ago", "value": 30}},
        "profile_date_within_next_days": {"profile": {"property": "Renewal",
                                                      "op": "within_next_days", "value": 7}},
        "profile_date_anniversary": {"profile": {"property": "Birthday",
                                                 "op": "anniversary_within_days", "value": 7}},
        "profile_list_contains": {"profile": {"property": "Tags", "op": "contains",
                                              "value": "gold"}},
        "profile_list_eq_number": {"profile": {"property": "Tags", "op": "eq", "value": 5}},
        "profile_list_eq_float": {"profile": {"property": "Tags", "op": "eq", "value": 5.0}},
        "profile_list_in": {"profile": {"property": "Tags", "op": "in",
                                        "value": ["silver", 5.0]}},
        "profile_list_not_in": {"profile": {"property": "Tags", "op": "not_in",
                                            "value": ["gold", "silver"]}},
        "profile_list_not_contains": {"profile": {"property": "Tags", "op": "not_contains",
                                                  "value": "gold"}},
        "profile_list_neq": {"profile": {"property": "Tags", "op": "neq", "value": "gold"}},
        "profile_system_email": {"profile": {"property": "$email", "op": "exists"}},
        "profile_system_total_events": {"profile": {"property": "$total_events", "op": "gte",
                                                    "value": 5}},
        "profile_system_last_seen": {"profile": {"property": "$last_seen", "op": "lt",
                                                 "value": now - 20 * H}},
        "profile_unknown_positive": {"profile": {"property": "Nope", "op": "eq", "value": 1}},
        "profile_unknown_negative": {"profile": {"property": "Nope", "op": "neq", "value": 1}},
        # event property filters, technographics and geography
        "event_boolean_and_platform": {"did": {"event": "App Launched", "where": [
            {"property": "Paid", "op": "neq", "value": True},
            {"property": "Platform", "op": "starts_with", "value": "and"}]}},
        "event_app_version_country": {"did": {"event": "App Launched", "where": [
            {"property": "App Version", "op": "starts_with", "value": "2."},
            {"property": "Country", "op": "eq", "value": "FR"}], "window": W30}},
        "event_list_property": {"did": {"event": "Charged", "where": [
            {"property": "Items", "op": "contains", "value": "b"}]}},
        # reachability
        "reachable_email": {"reachable": {"channel": "email"}},
        "reachable_sms": {"reachable": {"channel": "sms"}},
        "reachable_whatsapp": {"reachable": {"channel": "whatsapp"}},
        "reachable_push": {"reachable": {"channel": "push"}},
        "reachable_webpush": {"reachable": {"channel": "webpush"}},
        # saved segment references
        "segment_member": {"segment": {"id": charged_30d}},
        "segment_not_member": {"segment": {"id": charged_30d, "member": False}},
        "segment_twice": {"or": [{"segment": {"id": charged_30d}},
                                 {"and": [{"segment": {"id": paris}},
                                          {"segment": {"id": charged_30d}}]}]},
        # boolean structure
        "and": {"and": [{"did": {"event": "Charged"}},
                        {"profile": {"property": "City", "op": "eq", "value": "Paris"}}]},
        "and_with_negated": {"and": [{"did": {"event": "Charged"}},
                                     {"did_not": {"event": "App Uninstalled"}}]},
        "and_only_negated": {"and": [{"not": {"did": {"event": "Charged"}}},
                                     {"did_not": {"event": "App Launched"}}]},
        "or": {"or": [{"did": {"event": "App Uninstalled"}},
                      {"profile": {"property": "Age", "op": "gt", "value": 50}}]},
        "or_with_negated": {"or": [{"profile": {"property": "City", "op": "eq",
                                                "value": "Paris"}},
                                   {"not": {"reachable": {"channel": "email"}}}]},
        "not": {"not": {"did": {"event": "Charged", "window": W30}}},
        "canonical_a": {"and": [
            {"did": {"event": "Charged", "count": {"op": ">=", "value": 3}, "window": W30,
                     "where": [{"property": "Amount", "op": "gt", "value": 500}]}},
            {"profile": {"property": "City", "op": "eq", "value": "Paris"}},
            {"did_not": {"event": "App Uninstalled"}}]},
        "nested_three_levels": {"or": [
            {"and": [{"did": {"event": "Added To Cart", "window": {"last": {"hours": 24}}}},
                     {"not": {"or": [
                         {"did": {"event": "Charged", "window": {"last": {"hours": 24}}}},
                         {"profile": {"property": "VIP", "op": "eq", "value": True}}]}}]},
            {"first_time": {"event": "Charged", "window": {"last": {"days": 7}}}}]},
        "profile_tree_with_not": {"and": [
            {"profile": {"property": "Age", "op": "gt", "value": 20}},
            {"not": {"or": [{"profile": {"property": "City", "op": "eq", "value": "Berlin"}},
                            {"profile": {"property": "VIP", "op": "eq", "value": True}}]}}]},
        # injection attempts: bound parameters, never SQL text
        "injection_event_name": {"did": {"event": EVIL, "where": [
            {"property": EVIL, "op": "eq", "value": EVIL}]}},
        "injection_unknown_names": {"did": {"event": "'; DROP TABLE events; --", "where": [
            {"property": "\" OR 1=1 --", "op": "neq", "value": "' OR '1'='1"}]}},
        "injection_profile_value": {"profile": {"property": "Plan", "op": "in",
                                                "value": [EVIL, "') OR true --"]}},
        "injection_profile_name": {"profile": {"property": "City\") OR 1=1 --", "op": "eq",
                                               "value": "Paris"}},
    }
