"""Simulator building blocks without HTTP: draws, rate limit, Kits, validation, runs, Bricks."""

from __future__ import annotations

import hashlib
import hmac
import re

import orjson
import pytest

from connector.simulator import bricks, kits
from connector.simulator.errors import ApiError
from connector.simulator.faults import NO_FAULT, Dice, TokenBucket, plan_request
from connector.simulator.options import SimConfig
from connector.simulator.runs import CANCELLED, FAILURES, RunStore, rfc3339
from connector.simulator.validate import check_idempotency_key, fingerprint, parse_create
from connector.simulator.webhooks import sign

CONFIG = SimConfig(seed=42)


def body(**fields: object) -> bytes:
    base: dict[str, object] = {"kit_code": "A1B2C3D4", "input": {"transcript": "Rep: Hi."}}
    base.update(fields)
    return orjson.dumps(base)


# --- draws ------------------------------------------------------------------------------------


def test_dice_is_a_function_of_seed_subject_attempt_and_name() -> None:
    a, b = Dice(1), Dice(1)
    assert a.uniform("k", 1, "rate_429") == b.uniform("k", 1, "rate_429")
    values = {
        a.uniform("k", 1, "rate_429"),
        a.uniform("k", 2, "rate_429"),
        a.uniform("k", 1, "rate_5xx"),
        a.uniform("j", 1, "rate_429"),
        Dice(2).uniform("k", 1, "rate_429"),
    }
    assert len(values) == 5
    assert all(0.0 <= v < 1.0 for v in values)
    assert {a.pick("k", n, "x", 3, 5) for n in range(200)} == {3, 4, 5}


def test_dice_rates_are_honoured() -> None:
    dice = Dice(9)
    hits = sum(dice.uniform(f"k{i}", 1, "rate_5xx") < 0.3 for i in range(5000))
    assert 1300 < hits < 1700


def test_plan_without_faults_is_free() -> None:
    assert plan_request(CONFIG, Dice(1), "k", 1) is NO_FAULT


def test_plan_excludes_429_5xx_and_reset() -> None:
    config = SimConfig(rate_429=0.3, rate_5xx=0.3, reset_rate=0.3, slow_rate=0.5, slow_ms=(5, 9))
    dice = Dice(3)
    plans = [plan_request(config, dice, f"k{i}", 1) for i in range(2000)]
    assert {p.status for p in plans} == {0, 429, 500, 502, 503}
    assert not any(p.reset and p.status for p in plans)
    assert any(p.reset and p.reset_after_create for p in plans)
    assert any(p.reset and not p.reset_after_create for p in plans)
    assert {p.slow_ms for p in plans} == {0, 5, 6, 7, 8, 9}


def test_token_bucket() -> None:
    bucket = TokenBucket(2.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0, 0, 1]
    assert bucket.take(0.4) == 1  # 0.8 tokens: not yet
    assert bucket.take(0.6) == 0  # 1.2 tokens
    slow = TokenBucket(0.1, now=0.0)
    assert slow.take(0.0) == 0
    assert slow.take(0.0) == 10  # one token per 10 s


# --- Kits and validation ----------------------------------------------------------------------


def test_kit_resolution() -> None:
    assert kits.resolve(CONFIG, "A1B2C3D4", None) == ("A1B2C3D4", "kv_a1b2c3d4_v1")
    code, version = kits.resolve(CONFIG, None, "kv_pinned_7")
    assert version == "kv_pinned_7" and re.fullmatch(r"[A-F0-9]{8}", code)
    # kit_version_id wins; a well-formed kit_code given with it is kept as the code
    assert kits.resolve(CONFIG, "A1B2C3D4", "kv_x") == ("A1B2C3D4", "kv_x")
    listed = SimConfig(kits=frozenset({"A1B2C3D4"}), kit_versions=frozenset({"kv_ok"}))
    assert kits.resolve(listed, "A1B2C3D4", None)[0] == "A1B2C3D4"
    assert kits.resolve(listed, "ZZZZZZZZ", "kv_ok")[1] == "kv_ok"  # version wins
    for config, code, version, status in [
        (CONFIG, None, None, 400),
        (CONFIG, "", "", 400),
        (CONFIG, "a1b2c3d4", None, 404),
        (CONFIG, "A1B2C3D", None, 404),
        (CONFIG, None, "v1", 404),
        (listed, "B1B2C3D4", None, 404),
        (listed, "A1B2C3D4", "kv_other", 404),
    ]:
        with pytest.raises(ApiError) as exc:
            kits.resolve(config, code, version)
        assert exc.value.status == status


def test_schema_lists_every_brick() -> None:
    schema = kits.schema("A1B2C3D4", "kv_a1b2c3d4_v1")
    keys = [b["key"] for b in schema["bricks"]]  # type: ignore[attr-defined]
    assert keys == [b.key for b in bricks.CATALOGUE]
    assert schema["output_fields"] == ["value", "confidence", "reason", "evidence"]


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"{nope", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (orjson.dumps({"input": {}}), 400, "kit_code_or_kit_version_id_required"),
        (orjson.dumps({"kit_code": 5, "input": {}}), 400, "kit_code_or_kit_version_id_required"),
        (orjson.dumps({"kit_code": "A1B2C3D4"}), 400, "input_must_be_object"),
        (body(input="text"), 400, "input_must_be_object"),
        (body(type="prod"), 400, "invalid_run_type"),
        (body(mode="later"), 400, "invalid_run_mode"),
        (body(kit_code="nope"), 404, "kit_not_found"),
        (body(input={"transcript": ""}), 422, "input_not_processable"),
        (body(input={"transcript": "   "}), 422, "input_not_processable"),
        (body(input={"transcript": []}), 422, "input_not_processable"),
        (body(input={"_sim": {"outcome": "exploded"}}), 400, "invalid_sim_override"),
        (body(input={"_sim": {"duration_ms": -1}}), 400, "invalid_sim_override"),
        (body(input={"_sim": 3}), 400, "invalid_sim_override"),
    ],
)
def test_create_body_errors(raw: bytes, status: int, code: str) -> None:
    with pytest.raises(ApiError) as exc:
        parse_create(raw, CONFIG)
    assert (exc.value.status, exc.value.code) == (status, code)
    assert exc.value.body() == {"error": code, "message": exc.value.message}


def test_create_body_accepted() -> None:
    req = parse_create(body(type="sandbox", mode="sync", extra={"ignored": True}), CONFIG)
    assert (req.run_type, req.mode, req.kit_code) == ("sandbox", "sync", "A1B2C3D4")
    assert parse_create(body(input={}), CONFIG).input == {}  # no transcript: allowed
    sim = parse_create(body(input={"_sim": {"duration_ms": 5, "outcome": "failed"}}), CONFIG).sim
    assert sim is not None and (sim.duration_ms, sim.outcome) == (5, "failed")


def test_fingerprint_ignores_mode_and_key_order() -> None:
    a = {"kit_code": "A1B2C3D4", "input": {"b": 1, "a": 2}, "mode": "sync"}
    b = {"input": {"a": 2, "b": 1}, "kit_code": "A1B2C3D4"}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**b, "type": "sandbox"})


def test_idempotency_key_length() -> None:
    check_idempotency_key(None)
    check_idempotency_key("k" * 254)
    for bad in ("", "k" * 255):
        with pytest.raises(ApiError) as exc:
            check_idempotency_key(bad)
        assert exc.value.code == "invalid_idempotency_key"


# --- runs -------------------------------------------------------------------------------------


def test_lifecycle_by_time() -> None:
    store = RunStore(Dice(1))
    req = parse_create(body(input={"transcript": "x", "_sim": {"duration_ms": 1000}}), CONFIG)
    run, replayed = store.create(req, None, CONFIG, now=100.0, wall=1_700_000_000.0)
    assert not replayed and re.fullmatch(r"run_[0-9a-f]{24}", run.run_id)
    assert [run.status(t) for t in (100.0, 100.099, 100.1, 100.999, 101.0)] == [
        "queued",
        "queued",
        "running",
        "running",
        "succeeded",
    ]
    assert "completed_at" not in orjson.loads(run.detail_bytes(100.5))
    done = orjson.loads(run.detail_bytes(101.0))
    assert done["completed_at"] == "2023-11-14T22:13:21.000Z"
    assert done["created_at"] == "2023-11-14T22:13:20.000Z"
    assert done["duration_ms"] == 1000 and set(done["output"]) == {"kit_code", "bricks"}
    assert orjson.loads(run.detail_bytes(200.0)) == done


def test_outcomes_follow_rates_and_overrides() -> None:
    config = SimConfig(fail_rate=0.3, cancel_rate=0.2, run_duration_ms=(10, 20))
    store = RunStore(Dice(5))
    outcomes = []
    for i in range(1000):
        req = parse_create(body(input={"transcript": f"call {i}"}), config)
        run, _ = store.create(req, None, config, 0.0, 0.0)
        assert 10 <= run.duration_ms <= 20
        outcomes.append(run.outcome)
        detail = run.final()
        if run.outcome == "failed":
            assert (detail["error_code"], detail["error_message"]) in {f[:2] for f in FAILURES}
            assert detail["error_user_message"] and "output" not in detail
        elif run.outcome == "cancelled":
            assert detail["error_code"] == CANCELLED[0]
    assert 250 < outcomes.count("failed") < 350
    assert 150 < outcomes.count("cancelled") < 250
    forced = parse_create(body(input={"_sim": {"outcome": "succeeded", "duration_ms": 0}}), config)
    run, _ = store.create(forced, None, config, 0.0, 0.0)
    assert (run.outcome, run.duration_ms, run.status(0.0)) == ("succeeded", 0, "succeeded")


def test_idempotency_in_the_store() -> None:
    store = RunStore(Dice(1))
    req = parse_create(body(), CONFIG)
    first, replayed = store.create(req, "key-1", CONFIG, 0.0, 0.0)
    again, replayed2 = store.create(parse_create(body(mode="sync"), CONFIG), "key-1", CONFIG, 5, 5)
    assert again is first and (replayed, replayed2) == (False, True)
    with pytest.raises(ApiError) as exc:
        store.create(parse_create(body(type="sandbox"), CONFIG), "key-1", CONFIG, 0.0, 0.0)
    assert (exc.value.status, exc.value.code) == (409, "idempotency_key_conflict")
    other, _ = store.create(req, None, CONFIG, 0.0, 0.0)
    assert other is not first
    assert (store.created, store.replayed) == (2, 1)
    newest, more = store.newest(1)
    assert newest == [other] and more
    store.clear()
    assert store.get(first.run_id) is None
    fresh, _ = store.create(req, "key-1", CONFIG, 0.0, 0.0)
    assert fresh.run_id != first.run_id  # ids never repeat after a reset


def test_same_seed_same_ids_and_durations() -> None:
    def runs(seed: int) -> list[tuple[str, int, str]]:
        config = SimConfig(seed=seed, fail_rate=0.5)
        store = RunStore(Dice(seed))
        out = []
        for i in range(20):
            key = f"k{i}" if i % 2 else None
            run, _ = store.create(parse_create(body(), config), key, config, 0.0, 0.0)
            out.append((run.run_id, run.duration_ms, run.outcome))
        return out

    assert runs(3) == runs(3)
    assert runs(3) != runs(4)


def test_rfc3339() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_700_000_000.1239) == "2023-11-14T22:13:20.123Z"


def test_signature_matches_an_independent_hmac() -> None:
    header = sign("whsec_1", 1_700_000_000, b'{"a":1}')
    expected = hmac.new(b"whsec_1", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


# --- Bricks -----------------------------------------------------------------------------------

CALL = (
    "Rep: Thanks for joining, great to meet you. What budget have you set aside? "
    "Prospect: About $40k, but I'm worried the price is too high. We already use Gong today. "
    "Our CFO has to sign off on anything new. "
    "Rep: Makes sense. I'll send over a proposal and we can schedule a demo next week."
)


def test_bricks_read_the_transcript() -> None:
    out = bricks.evaluate({"transcript": CALL})
    assert set(out) == {b.key for b in bricks.CATALOGUE}
    for result in out.values():
        assert set(result) == {"value", "confidence", "reason", "evidence"}
        assert 0.0 <= result["confidence"] <= 1.0 and result["reason"]
        assert all(isinstance(q, str) and q in CALL for q in result["evidence"])
    assert out["budget_discussed"]["value"] is True
    assert "$40k" in out["budget_discussed"]["reason"]
    assert out["competitor_mentioned"]["value"] == "Gong"
    assert out["decision_maker_present"]["value"] is True
    assert any("proposal" in step for step in out["next_steps"]["value"])
    assert any("worried" in o for o in out["objections"]["value"])
    assert out["sentiment"]["value"] in {"positive", "mixed"}
    assert 0.0 < out["talk_ratio"]["value"] < 1.0
    assert out["summary"]["value"].startswith("A ")
    assert bricks.evaluate({"transcript": CALL}) == out  # deterministic


def test_bricks_on_a_quiet_call_and_on_turns() -> None:
    quiet = bricks.evaluate({"transcript": "hello there"})
    assert quiet["budget_discussed"]["value"] is False
    assert quiet["competitor_mentioned"]["value"] is None
    assert quiet["next_steps"]["value"] == [] and quiet["objections"]["value"] == []
    assert quiet["talk_ratio"]["value"] is None and quiet["sentiment"]["value"] == "neutral"
    turns = [
        {"speaker": "Agent", "text": "We can follow up next week with pricing."},
        {"speaker": "Customer", "text": "That is too expensive, and Salesforce is cheaper."},
    ]
    out = bricks.evaluate({"transcript": turns})
    assert out["talk_ratio"]["value"] == 0.5  # 8 words each
    assert out["competitor_mentioned"]["value"] == "Salesforce"
    assert out["next_steps"]["value"] == ["We can follow up next week with pricing."]
    assert bricks.evaluate({})["summary"]["value"].startswith("A 0-word")


def test_serialised_bricks_match_and_are_cached() -> None:
    turns = [{"speaker": "A", "text": "Our budget is fine."}]
    for run_input in ({"transcript": CALL}, {"transcript": turns}, {"messages": turns}, {}):
        assert orjson.loads(bricks.evaluate_json(run_input)) == bricks.evaluate(run_input)
    assert bricks.evaluate_json({"transcript": CALL}) is bricks.evaluate_json({"transcript": CALL})
