"""The tokens of the full-text index, made here so SQLite and Postgres index (and find) exactly the same.

A body becomes two streams:

- **words**, in order (phrases match adjacent positions): the folded words of :func:`search.words`,
  except that a run of unsegmented CJK script (Han, Hiragana, Katakana, Hangul) becomes its overlapping
  bigrams ("東京で会議" → 東京 京で で会 会議; a single character stays itself), so any word inside a
  run is found without a dictionary;
- **extras**, a set without positions: the last character of each CJK run of two or more (a one-character
  query also finds a run's end), and, when the body's language is detected with confidence, the
  Snowball stem of each word tagged with the language code ("en" + "report"), so a stem only ever meets
  stems of the same language. Stems never enter the words stream: phrases and prefixes stay exact.

The header fields every ``text`` search looks in (From, To, Cc, Bcc, Subject) are searched by substring;
their trigrams (:func:`trigrams`) are indexed as a third stream so a substring search reads only the
messages that hold all of its trigrams.

A query word is stemmed with every language's stemmer (one tagged token each): whichever language a
message was detected in, its own stem is among them.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import Stemmer

from jmapmono.config import STEMMERS

#: The unsegmented scripts: Hiragana, Katakana (and its phonetic extensions, half-width forms),
#: ideographic marks 々〆〇, Han (unified, extensions A–H, compatibility), Hangul (syllables and jamo).
_CJK = (
    "\u1100-\u11ff\u3005-\u3007\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
_CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD = re.compile(r"[^\W_]+")
_NOT_LETTER = re.compile(r"[\W\d_]+")
#: Characters of a body read to detect its language (detection costs about 0.15 ms per 1000).
DETECT_PREFIX = 1000
#: Below this many letters, or this confidence, a body is not stemmed (short texts are guessed wrong).
DETECT_MIN_LETTERS = 40
DETECT_MIN_CONFIDENCE = 0.5
#: Longer words are not stemmed (no language has such words; bounds the work).
_STEM_MAX_CHARS = 40
#: Language code → Snowball stemmer.
LANGUAGES = STEMMERS
_DIACRITIC = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def _fold(word: str) -> str:
    if word.isascii():
        return word
    return unicodedata.normalize("NFC", _DIACRITIC.sub("", unicodedata.normalize("NFD", word)))


@dataclass(frozen=True)
class Tokens:
    """A body's index tokens: the positional ``words`` stream and the positionless ``extras``; the languages
    it was stemmed in."""

    words: list[str]
    extras: list[str]
    languages: tuple[str, ...]


def trigrams(values: Iterable[str]) -> list[str]:
    """The distinct three-letter (or digit) pieces of folded header values, each line apart: every substring
    of three or more such characters has all of its own among them, so they narrow a substring search to the
    messages that may hold it (the search itself stays exact)."""
    out: dict[str, None] = {}
    for value in values:
        for line in value.split("\n"):
            for m in _WORD.finditer(line):
                w = m.group()
                for i in range(len(w) - 2):
                    out[w[i : i + 3]] = None
    return list(out)


def has_cjk(text: str) -> bool:
    return _CJK_RUN.search(text) is not None


def split_word(word: str, tails: list[str] | None = None) -> list[str]:
    """The stream tokens of one folded word: itself, or its CJK runs as bigrams beside its other letters.

    ``tails`` collects the last character of each CJK run of two or more.
    """
    if not has_cjk(word):
        return [word]
    out: list[str] = []
    at = 0
    for m in _CJK_RUN.finditer(word):
        if m.start() > at:
            out.append(word[at : m.start()])
        run = m.group()
        if len(run) == 1:
            out.append(run)
        else:
            out += [run[i : i + 2] for i in range(len(run) - 1)]
            if tails is not None:
                tails.append(run[-1])
        at = m.end()
    if at < len(word):
        out.append(word[at:])
    return out


def offsets(folded: str) -> Iterator[tuple[int, str, bool]]:
    """The words stream of folded text with each token's offset, and whether it ends a CJK run (lazily)."""
    for m in _WORD.finditer(folded):
        word, at = m.group(), m.start()
        if not has_cjk(word):
            yield at, word, False
            continue
        pos = 0
        for run in _CJK_RUN.finditer(word):
            if run.start() > pos:
                yield at + pos, word[pos : run.start()], False
            r = run.group()
            if len(r) == 1:
                yield at + run.start(), r, False
            for k in range(len(r) - 1):
                yield at + run.start() + k, r[k : k + 2], k == len(r) - 2
            pos = run.end()
        if pos < len(word):
            yield at + pos, word[pos:], False


def stream(folded_words: Iterable[str], tails: list[str] | None = None) -> list[str]:
    """The words stream of a sequence of folded words (see :func:`split_word`)."""
    out: list[str] = []
    for w in folded_words:
        out += split_word(w, tails)
    return out


def tokenize(text: str, folded_words: list[str], languages: tuple[str, ...] | None = None) -> Tokens:
    """The index tokens of a body ``text`` whose folded words (:func:`search.words`) are ``folded_words``,
    stemmed in ``languages`` (None: the language detected, if any)."""
    tails: list[str] = []
    words = stream(folded_words, tails) if has_cjk(text) else folded_words
    extras = list(dict.fromkeys(tails))
    stemmed = stemming_languages(text, languages)
    if stemmed:
        raw = _WORD.findall(unicodedata.normalize("NFC", text).lower()) if not text.isascii() else folded_words
        distinct = list(dict.fromkeys(raw))
        for code in stemmed:
            extras += stems(code, distinct)
    return Tokens(words, list(dict.fromkeys(extras)), stemmed)


def stemming_languages(text: str, languages: tuple[str, ...] | None) -> tuple[str, ...]:
    """The languages ``text`` is stemmed in: ``languages`` as configured, or (None) the one detected."""
    if languages is not None:
        return languages
    detected = detect_language(text)
    return (detected,) if detected is not None else ()


def _stemmable(word: str) -> bool:
    return len(word) <= _STEM_MAX_CHARS and word.isalpha() and not has_cjk(word)


def stems(language: str, words: Iterable[str]) -> list[str]:
    """The tagged stems of lower-cased ``words`` in ``language`` (folded after stemming, as words are)."""
    candidates = [w for w in words if _stemmable(w)]
    found = _stemmer(language).stemWords(candidates)
    return list(dict.fromkeys(language + _fold(s) for s in found if s.isalnum()))


def query_stems(word: str) -> list[str]:
    """A query word's tagged stems in every language (it may be in any); [] for what is never stemmed."""
    word = unicodedata.normalize("NFC", word).lower()
    if not _stemmable(word):
        return []
    stemmed = ((code, _stemmer(code).stemWord(word)) for code in LANGUAGES)
    return [code + _fold(s) for code, s in stemmed if s.isalnum()]


def detect_language(text: str) -> str | None:
    """The language code of ``text`` when detected with confidence and stemmable, else None."""
    sample = text[:DETECT_PREFIX]
    letters = len(_NOT_LETTER.sub("", sample))
    if letters < DETECT_MIN_LETTERS or 2 * sum(map(len, _CJK_RUN.findall(sample))) > letters:
        return None  # too short to tell, or mostly CJK (no stemmer: not worth the detector's time)
    code, confidence = _identifier().classify(sample)
    if code not in LANGUAGES or confidence < DETECT_MIN_CONFIDENCE:
        return None
    return str(code)


# The detector's model and the stemmers are immutable code data, loaded once per process like a compiled
# pattern (the model takes ~0.8 s to load, so only when first needed); stemmers are per thread, as
# PyStemmer's objects are not thread-safe (deliveries are parsed in worker threads).
_local = threading.local()


def _stemmer(code: str) -> Any:
    cache = getattr(_local, "stemmers", None)
    if cache is None:
        cache = _local.stemmers = {}
    s = cache.get(code)
    if s is None:
        s = cache[code] = Stemmer.Stemmer(LANGUAGES[code])
    return s


@functools.cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
