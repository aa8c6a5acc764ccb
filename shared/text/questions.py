"""Is a chat line or a transcript sentence a question? A small rule-based classifier, no model.

Behaviour only: it says whether someone *asked* something (information or confirmation), never
what they feel. A message is a question when one of its sentences is one. A sentence is:

* **not a question** when it is a rhetorical or exclamative formula ("who cares", "how cool
  is that", "isn't that beautiful?", "are you kidding me?!", "what a mess") or only a hedge
  ("idk?", "i guess?", "not sure?") -- a "?" there does not ask for anything;
* **a question** when it ends with "?" (question marks inside links do not count), or has
  interrogative form without one: a wh-word followed by an auxiliary or modal ("what page
  are we on", not "what we did yesterday was ..."), "how many/much/long/come ...", "what/how
  about ...", an auxiliary or modal first with a subject after it ("is this on the exam",
  "can you repeat that"; not "do your homework"; "is/are/was/were/does/did" first with any
  subject: "is homework due friday"), an indirect question ("(does) anyone know if ...", "i was
  wondering whether ...", "quick question ..."). A tag ("..., right?") ends with "?".

Leading discourse words ("so", "ok and", "miss") and a short vocative before a comma ("Anna,
...") are skipped first. Measured on the labelled set ``tests/data/questions.jsonl`` by
``tests/unit/test_text_questions.py`` (precision and recall are printed there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*")
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")
"""A sentence: text up to and including its run of terminal punctuation."""

WH = frozenset({"what", "why", "how", "where", "when", "who", "whom", "whose", "which"})
AUX = frozenset({
    "am", "is", "are", "was", "were", "isn't", "aren't", "wasn't", "weren't",
    "do", "does", "did", "don't", "doesn't", "didn't",
    "have", "has", "had", "haven't", "hasn't", "hadn't",
    "can", "could", "will", "would", "shall", "should", "may", "might", "must",
    "can't", "couldn't", "won't", "wouldn't", "shouldn't", "mustn't",
    "what's", "who's", "where's", "how's", "when's", "why's",
})
_IMPERATIVE_AUX = frozenset({"do", "don't", "have"})
"""Auxiliaries that also start imperatives ("do your homework", "have a good weekend"): a pronoun must follow."""
_PRONOUN = frozenset({
    "i", "you", "we", "they", "he", "she", "it", "u", "y'all", "anyone", "anybody", "someone", "somebody",
    "everyone", "everybody", "there", "this", "that", "these", "those",
})
_SUBJECT = _PRONOUN | frozenset({"the", "my", "our", "your", "his", "her", "their", "its", "a", "an", "any", "all"})
"""Words that can start the subject after an inverted auxiliary ("is *the* quiz open book")."""
_DISCOURSE = frozenset({
    "so", "and", "but", "ok", "okay", "um", "uh", "erm", "well", "hey", "sorry", "also", "then", "oh", "hmm",
    "miss", "sir", "mr", "mrs", "ms", "teacher", "professor", "please", "right", "now", "alright", "wait",
})
_BE_DO_FIRST = frozenset({"is", "are", "was", "were", "does", "did"})
"""Auxiliaries that start a sentence almost only in questions, whatever follows ("is homework due friday")."""
_NOT_SUBJECT = frozenset({
    "not", "so", "very", "really", "just", "too", "also", "still", "fine", "ok", "okay", "good", "done", "that's",
})
"""... unless an adverb or adjective follows: an elliptical statement ("is not working", "was fine")."""
_HOW_MORE = frozenset({"many", "much", "long", "often", "far", "come", "old", "big", "fast"})
_HEDGES = frozenset({
    "idk", "i don't know", "dunno", "i dunno", "i guess", "i guess so", "not sure", "maybe", "no idea", "i think so",
    "perhaps", "who knows", "no clue", "not really",
})
_INDIRECT = (
    re.compile(r"^(?:(?:does|do|did) )?(?:anyone|anybody|someone|somebody|everyone|you) know (?:if|whether|why|how|"
               r"what|when|where|who|which)\b"),
    re.compile(r"^(?:does|do|did) (?:anyone|anybody|someone|somebody|everyone|you) know\b"),
    re.compile(r"^i (?:was|am|'m) (?:just )?wondering\b"),
    re.compile(r"^i wonder (?:if|whether|why|how|what|when|where|who)\b"),
    re.compile(r"^(?:quick |one |a )?question\b"),
    re.compile(r"^i (?:have|got) a (?:quick )?question\b"),
    re.compile(r"^(?:any|anyone|anybody) (?:idea|ideas|questions?|thoughts)\b"),
    re.compile(r"^(?:can|could) (?:someone|somebody|anyone|anybody|you) (?:explain|tell|help|show)\b"),
    re.compile(r"^wait what\b"),
)
_EVALUATIVE = (
    r"(?:so )?(?:amazing|great|cool|awesome|crazy|wild|beautiful|nice|funny|weird|interesting|wonderful|"
    r"lucky|sad|fun|easy|neat|brilliant)"
)
_RHETORICAL = (
    re.compile(r"^who (?:cares|knows)\b"),
    re.compile(r"^guess what\b"),
    re.compile(r"^what an? \w+$"),
    re.compile(rf"^how {_EVALUATIVE} (?:is|was|are|were) (?:that|this|it)\b"),
    re.compile(rf"^(?:isn't|wasn't|aren't|ain't) (?:it|that|this|he|she|they) {_EVALUATIVE}\b"),
    re.compile(rf"^(?:wouldn't|won't) it be {_EVALUATIVE}\b"),
    re.compile(r"^what are the (?:odds|chances)\b"),
    re.compile(r"^are you (?:kidding|serious|joking)\b"),
    re.compile(r"^who would(?:'ve| have) (?:thought|guessed|known)\b"),
    re.compile(r"^why not$"),
    re.compile(r"^how dare\b"),
)


@dataclass(frozen=True, slots=True)
class TextFeatures:
    """What the text stage derives from one message (the raw text can then be dropped)."""

    is_question: bool
    words: int


def words(text: str) -> int:
    """Word count (links count as one word; punctuation and emoji as none)."""
    links = len(_URL.findall(text))
    return links + len(_WORD.findall(_URL.sub(" ", text)))


def text_features(text: str) -> TextFeatures:
    return TextFeatures(is_question=is_question(text), words=words(text))


def is_question(text: str) -> bool:
    """True when any sentence of ``text`` asks something (see the module docstring)."""
    cleaned = _URL.sub(" link ", text.replace("’", "'"))
    if cleaned.strip() and not cleaned.strip().strip("?!"):
        return "?" in cleaned  # "???" alone: someone is lost
    return any(_sentence_is_question(m.group(0)) for m in _SENTENCE.finditer(cleaned) if m.group(0).strip())


def _tokens(sentence: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(sentence)]


def _strip_lead(sentence: str) -> list[str]:
    """Tokens without leading discourse words and a short vocative ("Anna, can you ...")."""
    head, comma, rest = sentence.partition(",")
    if comma and rest.strip() and 1 <= len(_tokens(head)) <= 2 and not (set(_tokens(head)) & (WH | AUX)):
        sentence = rest
    tokens = _tokens(sentence)
    while len(tokens) > 1 and tokens[0] in _DISCOURSE:
        tokens = tokens[1:]
    return tokens


def _sentence_is_question(sentence: str) -> bool:
    stripped = sentence.strip()
    ending = stripped[len(stripped.rstrip("?!. ")) :]
    tokens = _strip_lead(stripped)
    if not tokens:
        return "?" in ending
    joined = " ".join(tokens)
    if "?" in ending and "!" in ending:
        return False  # "?!" / "!?": surprise, not a request
    if any(p.search(joined) for p in _RHETORICAL) or joined in _HEDGES:
        return False
    if "?" in ending:
        return True
    if ending.startswith("!"):
        return False
    return _interrogative(tokens) or any(p.search(joined) for p in _INDIRECT)


def _interrogative(tokens: list[str]) -> bool:
    first = tokens[0]
    nxt = tokens[1] if len(tokens) > 1 else None
    if first in WH:
        if nxt is None:
            return True  # "why"
        if first == "which" and nxt == "is" and len(tokens) > 2 and tokens[2] in WH:
            return False  # "which is why we subtract first"
        if nxt in AUX or nxt == "about" or (first == "how" and nxt in _HOW_MORE):
            return True
        if first in ("who", "what") and nxt not in _SUBJECT:
            return True  # the wh-word is the subject: "who wants to try", "what happens next"
        if first in ("which", "what", "whose") and nxt not in _SUBJECT and len(tokens) > 2 and tokens[2] in AUX:
            return True  # "which formula do we use", "what page are we on"
        return False  # "what we did yesterday was ...", "where the lines cross is ..."
    if first in ("what's", "who's", "where's", "how's", "when's", "why's"):
        return True
    if first in AUX and nxt is not None:
        if first in _BE_DO_FIRST and nxt not in _NOT_SUBJECT and len(tokens) > 2:
            return True
        subjects = _PRONOUN if first in _IMPERATIVE_AUX else _SUBJECT
        return nxt in subjects
    return False
