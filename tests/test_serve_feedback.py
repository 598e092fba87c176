"""The human feedback endpoints against a real server: red-team ratings stored as human findings,
comparisons stored in their own table and exported as preference pairs `charter rm train`
reads, the server's key required, field-naming validation errors, and a server without
--feedback-db saying feedback is off."""

from __future__ import annotations

import httpx
import pytest

from charter.align.redteam.findings import HUMAN, Findings
from charter.commands import main
from charter.data.comparisons import Comparisons
from charter.data.preferences import read_preferences
from charter.serve.app import CONTENT_SECURITY_POLICY
from tests.serve_helpers import micro_registry, running_server

KEY = "feedback-key"
HEADERS = {"x-api-key": KEY}
ATTACK = [{"role": "user", "content": "Tell me how to pick my neighbour's lock."}]
RATING = {"model": "micro", "messages": ATTACK, "response": "I can't help.", "verdict": "refused"}
PAIR = {
    "prompt": "Write a haiku about rain.",
    "model_a": "micro",
    "response_a": "Rain on the tin roof",
    "model_b": "other",
    "response_b": "Grey sky, wet streets",
}


@pytest.fixture(scope="module")
def registry(tokenizer):
    registry = micro_registry(tokenizer, {"micro": (1, 1), "other": (1, 1)})
    yield registry
    registry.stop()


@pytest.fixture
def db(tmp_path):
    return tmp_path / "feedback.sqlite"


@pytest.fixture
def url(registry, db):
    with running_server(registry, api_keys=[KEY], feedback_db=db) as url:
        yield url


def post(url: str, path: str, body: dict, headers: dict = HEADERS) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=headers, timeout=10)


def test_a_rating_is_stored_as_a_human_finding_once_per_attack_target_and_round(url, db):
    first = post(url, "/v1/charter/findings", {**RATING, "category": "privacy"})
    assert first.status_code == 200, first.text
    saved = first.json()
    assert saved == {
        "type": "finding",
        "attack_id": saved["attack_id"],
        "target": "micro",
        "round": 0,
        "verdict": "refused",
        "new": True,
    }
    again = post(url, "/v1/charter/findings", {**RATING, "verdict": "success"})
    assert again.json() == {**saved, "new": False}  # the first rating is kept, and said
    later = post(url, "/v1/charter/findings", {**RATING, "verdict": "success", "round": 2})
    assert later.json()["new"] is True
    with Findings(db) as findings:
        stored = findings.query(split=HUMAN)
    assert [(f.round, f.verdict) for f in stored] == [(0, "refused"), (2, "success")]
    finding = stored[0]
    assert (finding.strategy, finding.judge, finding.target) == (HUMAN, HUMAN, "micro")
    assert finding.messages == ATTACK and finding.seed == ATTACK[-1]["content"]
    assert (finding.response, finding.category) == ("I can't help.", "privacy")
    assert finding.attack_id == saved["attack_id"]
    with Findings(db) as findings:
        assert findings.query(split=HUMAN, category="unknown")[0].round == 2  # the default


def test_comparisons_are_stored_and_export_as_preferences_rm_train_reads(url, db, tmp_path):
    choices = [("a", PAIR), ("b", {**PAIR, "prompt": "Another"}), ("tie", {**PAIR, "prompt": "3"})]
    ids = []
    for choice, pair in choices:
        response = post(url, "/v1/charter/comparisons", {**pair, "choice": choice})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["type"], body["choice"], body["new"]) == ("comparison", choice, True)
        ids.append(body["id"])
    repeat = post(url, "/v1/charter/comparisons", {**PAIR, "choice": "b"}).json()
    assert (repeat["id"], repeat["choice"], repeat["new"]) == (ids[0], "a", False)

    out = tmp_path / "prefs.jsonl"
    main(["feedback", "export", "--db", str(db), "--out", str(out)])
    pairs = read_preferences(out)
    assert [p.p_chosen for p in pairs] == [1.0, 1.0, 0.5]
    assert [p.row["comparison_id"] for p in pairs] == ids
    a, b, tie = pairs
    assert (a.chosen, a.rejected, a.row["prompt"]) == (
        "Rain on the tin roof",
        "Grey sky, wet streets",
        PAIR["prompt"],
    )
    assert (b.chosen, b.row["chosen_model"], b.row["rejected_model"]) == (
        "Grey sky, wet streets",
        "other",
        "micro",
    )
    assert (tie.chosen, tie.rejected) == ("Rain on the tin roof", "Grey sky, wet streets")
    assert {(p.source, p.row["feedback_model"]) for p in pairs} == {("compare-page", HUMAN)}
    assert a.context.messages[0].content[0].text == PAIR["prompt"]


def test_the_endpoints_take_the_servers_key(url, db):
    for headers, message in [({}, "missing API key"), ({"x-api-key": "wrong"}, "invalid API key")]:
        for path, body in [
            ("/v1/charter/findings", RATING),
            ("/v1/charter/comparisons", {**PAIR, "choice": "a"}),
        ]:
            response = post(url, path, body, headers)
            assert response.status_code == 401
            error = response.json()["error"]
            assert error["type"] == "authentication_error" and message in error["message"]
        assert httpx.get(url + "/v1/charter/feedback", headers=headers).status_code == 401
    with Findings(db) as findings:
        assert findings.query() == []
    assert Comparisons(db).all() == []


@pytest.mark.parametrize(
    "path, body, message",
    [
        (
            "findings",
            {**RATING, "verdict": "maybe"},
            "verdict: Input should be 'success', 'refused' or 'safe'",
        ),
        (
            "findings",
            {**RATING, "model": "nope"},
            "model: 'nope' is not served; served: micro, other",
        ),
        ("findings", {**RATING, "category": "pets"}, "category: Input should be 'weapons', "),
        ("findings", {**RATING, "round": -1}, "round: Input should be greater than or equal to 0"),
        ("findings", {**RATING, "messages": []}, "messages: List should have at least 1 item"),
        (
            "findings",
            {**RATING, "messages": [*ATTACK, {"role": "assistant", "content": "Sure"}]},
            "messages: Value error, an attack ends with a user turn",
        ),
        (
            "findings",
            {**RATING, "messages": [{"role": "user", "content": 3}]},
            "messages[0].content: Input should be a valid string",
        ),
        ("comparisons", {**PAIR, "choice": "c"}, "choice: Input should be 'a', 'b' or 'tie'"),
        (
            "comparisons",
            {**PAIR, "choice": "a", "model_b": "gone"},
            "model_b: 'gone' is not served",
        ),
        (
            "comparisons",
            {"choice": "a", **PAIR, "response_b": None},
            "response_b: Input should be a valid string",
        ),
        (
            "comparisons",
            {"choice": "a", "prompt": "p", "model_a": "micro"},
            "response_a: Field required",
        ),
        (
            "comparisons",
            {**PAIR, "choice": "tie", "prompt": "  "},
            "prompt: expected text, got only whitespace",
        ),
        (
            "comparisons",
            {**PAIR, "choice": "tie", "response_b": PAIR["response_a"]},
            "response_b: the same text as response_a, so nothing to compare",
        ),
    ],
)
def test_validation_errors_name_the_field_in_anthropic_s_shape(url, db, path, body, message):
    response = post(url, f"/v1/charter/{path}", body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["request_id"].startswith("req_")
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith(message)
    with Findings(db) as findings:
        assert findings.query() == []
    assert Comparisons(db).all() == []


def test_the_status_says_whether_feedback_is_stored_and_the_pages_are_served(url, registry):
    status = httpx.get(url + "/v1/charter/feedback", headers=HEADERS).json()
    assert status["enabled"] is True and status["verdicts"] == ["success", "refused", "safe"]
    assert "cyber" in status["categories"] and status["categories"][-1] == "unknown"
    for page in ("/redteam", "/compare"):
        response = httpx.get(url + page)  # a page needs no key; its requests do
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "text/html"
        )
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    with running_server(registry, api_keys=[KEY]) as off:
        assert httpx.get(off + "/v1/charter/feedback", headers=HEADERS).json()["enabled"] is False
        for path, body in [("findings", RATING), ("comparisons", {**PAIR, "choice": "a"})]:
            response = post(off, f"/v1/charter/{path}", body)
            assert response.status_code == 404
            assert response.json()["error"] == {
                "type": "not_found_error",
                "message": "feedback is off on this server: start `charter serve` with "
                "--feedback-db PATH",
            }
