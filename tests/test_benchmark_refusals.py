"""The instances benchmark says when its edits were refused, and what the server answered."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import instances  # noqa: E402
from live_load import Item, Refusals  # noqa: E402

BUSY_FRAGMENT = (
    b'<form><div class="alert alert--error" role="alert"><p>Suunnitelmaa muokataan parhaillaan muualla;'
    b' yrit\xc3\xa4 uudelleen.</p></div><label>Kuvaus</label><textarea>Ei ty\xc3\xb6paikkaa</textarea></form>'
)


def test_refusals_are_counted_per_status_with_the_first_answer_and_passed_on() -> None:
    seen: list[int] = []
    refusals = Refusals(lambda item, status, body: seen.append(status))
    item = Item(plan=0, need=0, plan_id="p", need_id="n")
    for status, body in ((200, b"ok"), (422, BUSY_FRAGMENT), (422, b"<p>second</p>"), (403, b'{"error": 1}')):
        refusals(item, status, body)
    assert seen == [200, 422, 422, 403]
    taken = refusals.take()
    assert taken["count"] == 3
    assert taken["by_status"] == {"403": 1, "422": 2}
    assert taken["first_body"]["422"].startswith("Suunnitelmaa muokataan parhaillaan muualla; yritä uudelleen.")
    assert "second" not in taken["first_body"]["422"]
    assert refusals.take() == {"count": 0, "by_status": {}, "first_body": {}}


def test_the_markdown_lists_the_refused_steps_and_the_viewers_refused_at_connect() -> None:
    refused = {"count": 30, "by_status": {"422": 30}, "first_body": {"422": "Suunnitelmaa muokataan"}}
    report = {"setups": {
        "postgres-1": {"warm_up": {"refusals": {"count": 0, "by_status": {}, "first_body": {}}},
                       "steps": [{"label": "10/s", "refusals": {"count": 0}}]},
        "postgres-2p": {"warm_up": {"refusals": refused}, "connect": {"failures": {"http 403": 100}},
                        "steps": [{"label": "10/s", "refusals": refused,
                                   "postgres_connections": {"ours": 60, "all": 100, "max": 100}}]},
    }}
    lines = instances.refusal_lines(report)
    assert lines[0].startswith("**Refused**")
    assert [line.split(":")[0] for line in lines[1:]] == [
        "- postgres-2p warm-up", "- postgres-2p 10/s", "- postgres-2p"]
    assert "'all': 100, 'max': 100" in lines[2] and "Suunnitelmaa muokataan" in lines[2]
    assert "http 403" in lines[3]
    assert instances.refusal_lines({"setups": {"postgres-1": report["setups"]["postgres-1"]}}) == []


def test_a_viewer_refused_at_connect_is_counted_with_what_the_server_said() -> None:
    from live_viewers import _failure
    from websockets.datastructures import Headers
    from websockets.exceptions import InvalidStatus
    from websockets.http11 import Response

    refused = InvalidStatus(Response(403, "Forbidden", Headers(), b"you may not\n view this plan"))
    assert _failure(refused) == "http 403: you may not view this plan"
    assert _failure(InvalidStatus(Response(503, "Service Unavailable", Headers(), b""))) == "http 503"
    assert _failure(TimeoutError()) == "TimeoutError"
