"""Realistic Brick output, derived deterministically from the transcript text.

Each Brick is a small keyword rule over the transcript's sentences, so the same input always
gives the same `output.bricks`, and the values look like what a sales-call Kit would return:
`{"value": ..., "confidence": 0..1, "reason": "...", "evidence": ["quote", ...]}`.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

OUTPUT_FIELDS = ("value", "confidence", "reason", "evidence")
_MAX_QUOTE = 160
_MAX_QUOTES = 2


@dataclass(frozen=True, slots=True)
class Utterance:
    speaker: str | None
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass(frozen=True, slots=True)
class Transcript:
    utterances: tuple[Utterance, ...]
    sentences: tuple[str, ...]
    hits: dict[str, list[int]]  # keyword category -> indices of the sentences that show it
    terms: dict[str, set[str]]  # keyword category -> the words and phrases found


BrickResult = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Brick:
    key: str
    type: str
    description: str
    evaluate: Callable[[Transcript], BrickResult]


# --- reading the transcript -----------------------------------------------------------------

_SPEAKER_RE = re.compile(r"([A-Z][A-Za-z]{0,20}(?: [A-Z][A-Za-z]{0,20})?):\s+")
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\n")
_TOKEN_RE = re.compile(r"\$?[a-z0-9']+|\n")
_MAX_SENTENCES = 500  # keyword rules read the first 500 sentences; word counts read all

# Keyword rules: words (before the first "|") and phrases -> the category each signals.
_LEXICON_SOURCE = {
    "budget": "budget budgets budgeted budgeting price prices pricing priced cost costs costly "
    "spend spending quote discount invoice dollars dollar|per seat|license fee|licence fee",
    "next": "schedule demo trial proposal|next step|next steps|follow up|follow-up|send over|"
    "send you|send it|set up a|book a|book the|next week|next call|next meeting|circle back|"
    "loop in",
    "objection": "expensive concern concerns concerned worried worry worries hesitant risk risks "
    "risky can't cant problem issue|too expensive|not sure|don't think|dont think|"
    "already use|already have|no budget|push back",
    "positive": "great good love like excellent perfect excited helpful thanks interested happy "
    "impressive|thank you|sounds good|makes sense",
    "negative": "bad hate frustrated frustrating frustration annoyed annoying expensive difficult "
    "problem issue unhappy disappointed disappointing confused confusing slow broken angry "
    "concern concerns concerned",
    "competitor": "gong chorus clari salesloft outreach hubspot salesforce fireflies otter",
    "decider": "ceo cfo cto coo vp director approve approval approved approves|vice president|"
    "head of|decision maker|decision-maker|sign off|sign-off|final say",
}


def _build_lexicon() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    words: dict[str, tuple[str, ...]] = {}
    phrases: dict[str, tuple[str, ...]] = {}
    for category, source in _LEXICON_SOURCE.items():
        word_list, *phrase_list = source.split("|")
        for word in word_list.split():
            words[word] = (*words.get(word, ()), category)
        for phrase in phrase_list:
            phrases[phrase] = (*phrases.get(phrase, ()), category)
    return words, phrases


_WORDS, _PHRASES = _build_lexicon()
_COMPETITOR_NAMES = {
    name.lower(): name
    for name in (
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
}


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
                name = str(speaker) if speaker is not None else None
                utterances.append(Utterance(name, item["text"].strip()))
            elif isinstance(item, str):
                utterances.append(Utterance(None, item.strip()))
    utterances = [u for u in utterances if u.text]
    text = "\n".join(u.text for u in utterances)
    sentences = [s for s in (p.strip() for p in _SENTENCE_SPLIT_RE.split(text)) if s]
    found: dict[str, set[int]] = {}
    terms: dict[str, set[str]] = {}
    for index, category, term in _keywords(sentences[:_MAX_SENTENCES]):
        found.setdefault(category, set()).add(index)
        terms.setdefault(category, set()).add(term)
    hits = {category: sorted(indices) for category, indices in found.items()}
    return Transcript(tuple(utterances), tuple(sentences), hits, terms)


def _keywords(sentences: list[str]) -> Iterator[tuple[int, str, str]]:
    """`(sentence index, category, term)` for each lexicon word, dollar amount or phrase."""
    low = "\n".join(sentences).lower().replace("\u2019", "'")
    # Words: one tokenising pass over the whole text; "\n" tokens separate the sentences.
    index = 0
    words = _WORDS
    for token in _TOKEN_RE.findall(low):
        if token == "\n":
            index += 1
        elif token in words:
            for category in words[token]:
                yield index, category, token
        elif token[0] == "$" and len(token) > 1:
            yield index, "budget", token
    # Phrases: one C-level scan of the whole text per phrase, offsets mapped to sentences.
    starts = list(itertools.accumulate((len(s) + 1 for s in sentences[:-1]), initial=0))
    for phrase, categories in _PHRASES.items():
        pos = low.find(phrase)
        while pos >= 0:
            end = pos + len(phrase)
            if (pos == 0 or not low[pos - 1].isalnum()) and (
                end == len(low) or not low[end].isalnum()
            ):
                index = bisect.bisect_right(starts, pos) - 1
                for category in categories:
                    yield index, category, phrase
            pos = low.find(phrase, end)


def _split_speakers(text: str) -> list[Utterance]:
    matches = [
        m
        for m in _SPEAKER_RE.finditer(text)
        if m.start() == 0 or text[m.start() - 1] in " \t\r\n.!?"
    ]
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


def _quote(sentence: str) -> str:
    return sentence if len(sentence) <= _MAX_QUOTE else sentence[: _MAX_QUOTE - 1] + "…"


def _matching(t: Transcript, category: str) -> list[str]:
    return [t.sentences[i] for i in t.hits.get(category, ())]


def _confidence(hits: int, base: float = 0.62, step: float = 0.09) -> float:
    return round(min(0.97, base + step * hits), 2)


def _result(value: object, confidence: float, reason: str, evidence: list[str]) -> BrickResult:
    return {
        "value": value,
        "confidence": confidence,
        "reason": reason,
        "evidence": [_quote(s) for s in evidence[:_MAX_QUOTES]],
    }


def _terms(t: Transcript, category: str) -> str:
    return ", ".join(sorted(t.terms.get(category, ()))[:4])


# --- the Bricks -------------------------------------------------------------------------------


def _budget(t: Transcript) -> BrickResult:
    hits = _matching(t, "budget")
    if hits:
        reason = f"Pricing or budget came up in {len(hits)} sentence(s) ({_terms(t, 'budget')})."
        return _result(True, _confidence(len(hits)), reason, hits)
    return _result(False, 0.74, "No sentence mentions budget, pricing or cost.", [])


def _next_steps(t: Transcript) -> BrickResult:
    hits = _matching(t, "next")
    if hits:
        reason = f"{len(hits)} sentence(s) commit to a follow-up ({_terms(t, 'next')})."
        steps = [_quote(s) for s in hits[:3]]
        return _result(steps, _confidence(len(hits), 0.58), reason, hits)
    return _result([], 0.66, "No concrete follow-up was agreed.", [])


def _sentiment(t: Transcript) -> BrickResult:
    pos = _matching(t, "positive")
    neg = _matching(t, "negative")
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
    hits = _matching(t, "objection")
    if hits:
        reason = f"The prospect raised {len(hits)} concern(s) ({_terms(t, 'objection')})."
        return _result([_quote(s) for s in hits[:3]], _confidence(len(hits), 0.6), reason, hits)
    return _result([], 0.7, "No objection was raised.", [])


def _competitor(t: Transcript) -> BrickResult:
    hits = _matching(t, "competitor")
    if hits:
        tokens = _TOKEN_RE.findall(hits[0].lower())
        name = _COMPETITOR_NAMES[next(t for t in tokens if t in _COMPETITOR_NAMES)]
        reason = f"{name} is named in {len(hits)} sentence(s)."
        return _result(name, _confidence(len(hits), 0.8, 0.05), reason, hits)
    return _result(None, 0.81, "No competitor is named.", [])


def _talk_ratio(t: Transcript) -> BrickResult:
    counts: dict[str, int] = {}
    for u in t.utterances:
        if u.speaker is not None:
            counts[u.speaker] = counts.get(u.speaker, 0) + u.words
    total = sum(counts.values())
    if not total:
        return _result(None, 0.3, "Speakers are not labelled, so talk time is unknown.", [])
    first = next(iter(counts))
    ratio = round(counts[first] / total, 2)
    reason = f"{first} spoke {counts[first]} of {total} words across {len(counts)} speaker(s)."
    return _result(ratio, 0.9 if len(counts) > 1 else 0.5, reason, [])


def _decision_maker(t: Transcript) -> BrickResult:
    hits = _matching(t, "decider")
    if hits:
        reason = f"Authority to decide came up ({_terms(t, 'decider')})."
        return _result(True, _confidence(len(hits), 0.55), reason, hits)
    return _result(False, 0.52, "Nobody with buying authority was identified.", [])


def _summary(t: Transcript) -> BrickResult:
    words = sum(u.words for u in t.utterances)
    speakers = sorted({u.speaker for u in t.utterances if u.speaker})
    topics = [
        name
        for name, category in (
            ("pricing", "budget"),
            ("next steps", "next"),
            ("objections", "objection"),
            ("competitors", "competitor"),
        )
        if category in t.hits
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
    transcript = read_transcript(run_input.get("transcript", run_input.get("messages")))
    return {brick.key: brick.evaluate(transcript) for brick in CATALOGUE}


def evaluate_json(run_input: dict[str, Any]) -> bytes:
    """`evaluate(run_input)` serialised, cached by transcript (sample data repeats a lot)."""
    return _evaluate_json(orjson.dumps(run_input.get("transcript", run_input.get("messages"))))


@functools.lru_cache(maxsize=256)
def _evaluate_json(transcript_json: bytes) -> bytes:
    return orjson.dumps(evaluate({"transcript": orjson.loads(transcript_json)}))
