"""Realistic Brick output, derived deterministically from the transcript text.

Each Brick is a small keyword rule over the transcript's sentences, so the same input always
gives the same `output.bricks`, and the values look like what a sales-call Kit would return:
`{"value": ..., "confidence": 0..1, "reason": "...", "evidence": ["quote", ...]}`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OUTPUT_FIELDS = ("value", "confidence", "reason", "evidence")
_MAX_QUOTE = 160
_MAX_QUOTES = 2


@dataclass(frozen=True, slots=True)
class Utterance:
    speaker: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Transcript:
    utterances: tuple[Utterance, ...]
    sentences: tuple[str, ...]


BrickResult = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Brick:
    key: str
    type: str
    description: str
    evaluate: Callable[[Transcript], BrickResult]


# --- reading the transcript -----------------------------------------------------------------

_SPEAKER_RE = re.compile(r"(?:^|(?<=[\s.!?]))([A-Z][A-Za-z]{0,20}(?: [A-Z][A-Za-z]{0,20})?):\s+")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")


def read_transcript(value: object) -> Transcript:
    """A transcript from `input.transcript`: a string ("Rep: ... Prospect: ...") or a list
    of `{speaker, text}`. Anything else reads as empty."""
    utterances: list[Utterance] = []
    if isinstance(value, str):
        utterances = _split_speakers(value)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                speaker = item.get("speaker")
                utterances.append(
                    Utterance(str(speaker) if speaker is not None else None, item["text"].strip())
                )
            elif isinstance(item, str):
                utterances.append(Utterance(None, item.strip()))
    sentences = tuple(
        s.strip() for u in utterances for s in _SENTENCE_RE.split(u.text) if s.strip()
    )
    return Transcript(tuple(u for u in utterances if u.text), sentences)


def _split_speakers(text: str) -> list[Utterance]:
    matches = list(_SPEAKER_RE.finditer(text))
    if not matches:
        return [Utterance(None, text.strip())]
    out: list[Utterance] = []
    if matches[0].start() > 0:
        out.append(Utterance(None, text[: matches[0].start()].strip()))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out.append(Utterance(match.group(1), text[match.end() : end].strip()))
    return out


# --- helpers ----------------------------------------------------------------------------------


def _words(text: str) -> int:
    return len(text.split())


def _quote(sentence: str) -> str:
    return sentence if len(sentence) <= _MAX_QUOTE else sentence[: _MAX_QUOTE - 1] + "…"


def _matching(t: Transcript, pattern: re.Pattern[str]) -> list[str]:
    return [s for s in t.sentences if pattern.search(s)]


def _confidence(hits: int, base: float = 0.62, step: float = 0.09) -> float:
    return round(min(0.97, base + step * hits), 2)


def _result(value: object, confidence: float, reason: str, evidence: list[str]) -> BrickResult:
    return {
        "value": value,
        "confidence": confidence,
        "reason": reason,
        "evidence": [_quote(s) for s in evidence[:_MAX_QUOTES]],
    }


def _terms(pattern: re.Pattern[str], sentences: list[str]) -> str:
    found = sorted({m.group(0).lower() for s in sentences for m in pattern.finditer(s)})
    return ", ".join(found[:4])


# --- the Bricks -------------------------------------------------------------------------------

_BUDGET_RE = re.compile(
    r"\b(budget\w*|pric(?:e|es|ing)|costs?|spend(?:ing)?|quote|discount|per seat|"
    r"licen[cs]e fee|invoice|dollars?)\b|\$\s?\d[\d,.]*k?",
    re.IGNORECASE,
)
_NEXT_RE = re.compile(
    r"\b(next steps?|follow[- ]up|send (?:over|you|it)|schedule|set up a|book (?:a|the)|"
    r"demo|trial|proposal|next (?:week|call|meeting)|circle back|loop in)\b",
    re.IGNORECASE,
)
_OBJECTION_RE = re.compile(
    r"\b(too expensive|expensive|concern(?:ed|s)?|worr(?:y|ied)|not sure|hesitant|risk\w*|"
    r"don'?t think|can'?t|problem|issue|already (?:use|have)|no budget|push back)\b",
    re.IGNORECASE,
)
_POSITIVE_RE = re.compile(
    r"\b(great|good|love|like|excellent|perfect|excited|helpful|thanks|thank you|"
    r"interested|sounds good|makes sense|happy|impressive)\b",
    re.IGNORECASE,
)
_NEGATIVE_RE = re.compile(
    r"\b(bad|hate|frustrat\w*|annoy\w*|expensive|difficult|problem|issue|unhappy|"
    r"disappoint\w*|confus\w*|slow|broken|angry|concern\w*)\b",
    re.IGNORECASE,
)
_COMPETITORS = (
    "Gong",
    "Chorus",
    "Clari",
    "Salesloft",
    "Outreach",
    "HubSpot",
    "Salesforce",
    "Fireflies",
    "Otter",
)
_COMPETITOR_RE = re.compile(r"\b(" + "|".join(_COMPETITORS) + r")\b", re.IGNORECASE)
_DECIDER_RE = re.compile(
    r"\b(CEO|CFO|CTO|COO|VP|vice president|director|head of|decision[- ]maker|"
    r"sign[- ]off|approv\w*|final say)\b",
    re.IGNORECASE,
)


def _budget(t: Transcript) -> BrickResult:
    hits = _matching(t, _BUDGET_RE)
    if hits:
        reason = (
            f"Pricing or budget came up in {len(hits)} sentence(s) ({_terms(_BUDGET_RE, hits)})."
        )
        return _result(True, _confidence(len(hits)), reason, hits)
    return _result(False, 0.74, "No sentence mentions budget, pricing or cost.", [])


def _next_steps(t: Transcript) -> BrickResult:
    hits = _matching(t, _NEXT_RE)
    steps = [_quote(s) for s in hits[:3]]
    if hits:
        reason = f"{len(hits)} sentence(s) commit to a follow-up ({_terms(_NEXT_RE, hits)})."
        return _result(steps, _confidence(len(hits), 0.58), reason, hits)
    return _result([], 0.66, "No concrete follow-up was agreed.", [])


def _sentiment(t: Transcript) -> BrickResult:
    pos = _matching(t, _POSITIVE_RE)
    neg = _matching(t, _NEGATIVE_RE)
    if not pos and not neg:
        return _result("neutral", 0.6, "No clearly positive or negative language.", [])
    if len(pos) >= 2 * max(1, len(neg)):
        value, evidence = "positive", pos
    elif len(neg) >= 2 * max(1, len(pos)):
        value, evidence = "negative", neg
    else:
        value, evidence = "mixed", pos[:1] + neg[:1]
    reason = f"{len(pos)} positive and {len(neg)} negative sentence(s)."
    return _result(value, _confidence(abs(len(pos) - len(neg)), 0.55, 0.07), reason, evidence)


def _objections(t: Transcript) -> BrickResult:
    hits = _matching(t, _OBJECTION_RE)
    if hits:
        reason = f"The prospect raised {len(hits)} concern(s) ({_terms(_OBJECTION_RE, hits)})."
        return _result([_quote(s) for s in hits[:3]], _confidence(len(hits), 0.6), reason, hits)
    return _result([], 0.7, "No objection was raised.", [])


def _competitor(t: Transcript) -> BrickResult:
    hits = _matching(t, _COMPETITOR_RE)
    if hits:
        first = _COMPETITOR_RE.search(hits[0])
        assert first is not None
        name = next(c for c in _COMPETITORS if c.lower() == first.group(0).lower())
        reason = f"{name} is named in {len(hits)} sentence(s)."
        return _result(name, _confidence(len(hits), 0.8, 0.05), reason, hits)
    return _result(None, 0.81, "No competitor is named.", [])


def _talk_ratio(t: Transcript) -> BrickResult:
    counts: dict[str, int] = {}
    for u in t.utterances:
        if u.speaker is not None:
            counts[u.speaker] = counts.get(u.speaker, 0) + _words(u.text)
    total = sum(counts.values())
    if not total:
        return _result(None, 0.3, "Speakers are not labelled, so talk time is unknown.", [])
    first = next(iter(counts))
    ratio = round(counts[first] / total, 2)
    reason = f"{first} spoke {counts[first]} of {total} words across {len(counts)} speaker(s)."
    return _result(ratio, 0.9 if len(counts) > 1 else 0.5, reason, [])


def _decision_maker(t: Transcript) -> BrickResult:
    hits = _matching(t, _DECIDER_RE)
    if hits:
        reason = f"Authority to decide came up ({_terms(_DECIDER_RE, hits)})."
        return _result(True, _confidence(len(hits), 0.55), reason, hits)
    return _result(False, 0.52, "Nobody with buying authority was identified.", [])


def _summary(t: Transcript) -> BrickResult:
    words = sum(_words(u.text) for u in t.utterances)
    speakers = sorted({u.speaker for u in t.utterances if u.speaker})
    topics = [
        name
        for name, pattern in (
            ("pricing", _BUDGET_RE),
            ("next steps", _NEXT_RE),
            ("objections", _OBJECTION_RE),
            ("competitors", _COMPETITOR_RE),
        )
        if any(pattern.search(s) for s in t.sentences)
    ]
    who = " and ".join(speakers) if speakers else "unlabelled speakers"
    about = f" covering {', '.join(topics)}" if topics else ""
    value = f"A {words}-word conversation between {who}{about}."
    return _result(value, 0.88, "Summarised from the whole transcript.", list(t.sentences[:1]))


CATALOGUE: tuple[Brick, ...] = (
    Brick("budget_discussed", "boolean", "Whether budget, pricing or cost was discussed", _budget),
    Brick("next_steps", "list", "Concrete follow-ups agreed on the call", _next_steps),
    Brick("sentiment", "string", "Overall tone: positive, neutral, mixed or negative", _sentiment),
    Brick("objections", "list", "Concerns or objections the prospect raised", _objections),
    Brick("competitor_mentioned", "string", "The first competitor named, if any", _competitor),
    Brick("talk_ratio", "number", "Share of words spoken by the first speaker", _talk_ratio),
    Brick(
        "decision_maker_present",
        "boolean",
        "Whether someone with buying authority took part or was named",
        _decision_maker,
    ),
    Brick("summary", "string", "A one-sentence description of the call", _summary),
)


def evaluate(run_input: dict[str, Any]) -> dict[str, BrickResult]:
    """`output.bricks` for a run input, keyed by Brick key."""
    transcript = read_transcript(run_input.get("transcript"))
    return {brick.key: brick.evaluate(transcript) for brick in CATALOGUE}
