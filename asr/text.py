"""Transcript normalisation, tokenisers and language packs.

Korean transcript convention (``normalize_ko``), applied to references before training and scoring
and to anything a person types (hotwords, grammar phrases):

1. Unicode NFC; full-width ASCII (``３``, ``％``, ``Ｔ``) is read as ASCII and the ideographic space as a
   space.
2. Numbers are written out in Hangul, the way the reference transcripts spell them:

   - native Korean numerals before the counters 시, 시간, 개, 번째, 살, 명, 잔, 마리 for 1–99, in their
     attributive forms: ``7시`` → ``일곱 시``, ``12시`` → ``열두 시``, ``3시간`` → ``세 시간``,
     ``20살`` → ``스무 살``, ``1번째`` → ``첫 번째``. 0 and numbers of 100 or more before these counters
     are Sino-Korean (``100명`` → ``백 명``); ``개월`` and ``시즌`` are Sino-Korean counters.
   - Sino-Korean everywhere else: ``30분`` → ``삼십 분``, ``25도`` → ``이십오 도``, ``3으로`` → ``삼으로``,
     ``7번 채널`` → ``칠 번 채널``, ``10단계`` → ``십 단계``, ``2026`` → ``이천이십육``,
     ``10000`` → ``만``, ``3.5`` → ``삼점오``. A number is one word without internal spaces.
   - a counter or unit right after a number is written as its own word (``7시`` → ``일곱 시``,
     ``30분`` → ``삼십 분``); the counters/units recognised are ``NATIVE_COUNTERS`` and
     ``SINO_COUNTERS`` (a space already between number and counter is fine: ``3 개`` → ``세 개``).
     Anything else after a number (particles such as 으로, 에, 는) stays attached.
   - months are one word: ``3월`` → ``삼월``, ``6월`` → ``유월``, ``10월`` → ``시월``.
   - ``50%`` and ``50퍼센트`` → ``오십 퍼센트`` (``50프로`` → ``오십 프로``); ``℃``/``°C``/``°`` → ``도``; ``7:30`` →
     ``일곱 시 삼십 분``; thousands separators are dropped (``1,000`` → ``천``).
   - digit strings with a leading zero (``010``) are read digit by digit with 공 for zero (``공일공``),
     as are numbers of 21 digits or more and phone numbers (``010-1234-5678`` →
     ``공일공 일이삼사 오육칠팔``).
3. Punctuation, symbols and other non-letters become spaces; format characters (zero-width space…)
   are removed.
4. Latin letters are lowercased and kept; a few device words are written the way the transcribers
   write them in Korean (``DEVICE_WORDS``: tv → 티비, wifi → 와이파이, …). The Korean tokenizer maps
   the remaining Latin letters to ``<unk>``.
5. Whitespace is collapsed to single spaces and trimmed.

The function is idempotent: ``normalize_ko(normalize_ko(x)) == normalize_ko(x)``.

Scoring (``cer_units``): Korean spacing is inconsistent even between careful transcribers (``거실 티비``
and ``거실티비`` are both right), so CER is computed over the syllables with all spaces removed; WER
splits on the spaces and therefore does count spacing.

Tokenizers share one interface: ``blank_id = 0``; ``vocab[0] = "<blank>"``, ``vocab[1] = "<unk>"``,
``vocab[2] = " "``; ``encode(text) -> list[int]``; ``decode(ids) -> str`` on CTC-collapsed ids;
``to_dict()`` / ``Tokenizer.from_dict(d)`` (stored inside checkpoints); ``len()``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Numbers → Hangul
# --------------------------------------------------------------------------------------------------

_SINO_DIGITS = ("", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구")
_DIGIT_BY_DIGIT = ("공", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구")
_DECIMAL_DIGITS = ("영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구")
_SMALL_UNITS = ("", "십", "백", "천")
_LARGE_UNITS = ("", "만", "억", "조", "경")
# attributive native numerals (the form used before a counter): 한 개, 두 시, 세 명, 스무 살
_NATIVE_ONES = ("", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉")
_NATIVE_TENS = ("", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔")
_MONTHS = {6: "유", 10: "시"}  # 유월, 시월 drop the final consonant

#: counters read with native numerals (1–99). Sino-Korean compounds that start like one (개월,
#: 시즌) are listed in SINO_COUNTERS; the regex tries longer counters first.
NATIVE_COUNTERS: tuple[str, ...] = ("번째", "시간", "시", "개", "살", "명", "잔", "마리")
#: counters/units that take Sino-Korean numerals and are written as a separate word.
SINO_COUNTERS: tuple[str, ...] = (
    "퍼센트", "프로", "개월", "시즌", "단계", "레벨", "킬로", "미터", "센티", "센치", "인분",
    "분", "초", "도", "번", "층", "년", "일", "원", "호", "회", "배", "주", "칸", "등", "위", "차",
)  # fmt: skip

#: Latin words (lowercased, whole Latin runs) rewritten in Hangul in Korean transcripts.
DEVICE_WORDS: dict[str, str] = {"tv": "티비", "wifi": "와이파이", "usb": "유에스비", "ok": "오케이"}

_COUNTERS = sorted(set(NATIVE_COUNTERS) | set(SINO_COUNTERS) | {"월"}, key=len, reverse=True)
_NUMBER_RE = re.compile(r"(\d+)(?:\.(\d+))?(?:(\s*)(" + "|".join(map(re.escape, _COUNTERS)) + r"))?")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PHONE_RE = re.compile(r"(?<![\d-])0\d{1,3}(?:-\d{3,4}){1,2}(?![\d-])")
_CLOCK_RE = re.compile(r"(?<!\d)(\d{1,2}):(\d{2})(?!\d)")
_FULLWIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_SYMBOL_WORDS = (("°C", "도"), ("°c", "도"), ("℃", "도"), ("°", "도"), ("%", "퍼센트"))
_LATIN_RUN_RE = re.compile(r"[a-z]+")


def sino_korean(number: int | str) -> str:
    """Sino-Korean reading of a non-negative integer: 2026 → 이천이십육, 10000 → 만, 0 → 영."""
    digits = str(number)
    if (len(digits) > 1 and digits[0] == "0") or len(digits) > 20:
        return _digit_by_digit(digits)
    n = int(digits)
    if n == 0:
        return "영"
    words = []
    group_index = 0
    while n:
        n, group = divmod(n, 10000)
        if group:
            part = ""
            for pos in range(3, -1, -1):
                d = group // 10**pos % 10
                if d:
                    # 일 is dropped before 십/백/천 (십, not 일십) but kept in the ones place
                    part += ("" if d == 1 and pos else _SINO_DIGITS[d]) + _SMALL_UNITS[pos]
            if group == 1 and group_index == 1:
                part = ""  # 10000 → 만, 15000 → 만오천 (not 일만)
            words.append(part + _LARGE_UNITS[group_index])
        group_index += 1
    return "".join(reversed(words))


def _digit_by_digit(digits: str) -> str:
    return "".join(_DIGIT_BY_DIGIT[int(d)] for d in digits)


def native_korean(number: int) -> str:
    """Attributive native Korean numeral for 1–99 (the form before a counter): 12 → 열두, 20 → 스무."""
    if not 1 <= number <= 99:
        raise ValueError(f"native Korean numerals cover 1–99, got {number}")
    tens, ones = divmod(number, 10)
    if number == 20:
        return "스무"
    return _NATIVE_TENS[tens] + _NATIVE_ONES[ones]


def _number_words(match: re.Match[str]) -> str:
    integer, fraction, _, counter = match.groups()
    integer = "".join(str(int(d)) for d in integer)  # other scripts' digits → ASCII
    if fraction is not None:
        spoken = sino_korean(int(integer)) + "점" + "".join(_DECIMAL_DIGITS[int(d)] for d in fraction)
        return spoken + (" " + counter if counter else "")
    if counter is None:
        return sino_korean(integer)  # a bare 010 is read digit by digit
    value = int(integer)  # before a counter a leading zero is not read: 07시 → 일곱 시
    if counter == "월" and 1 <= value <= 12:
        return _MONTHS.get(value, sino_korean(value)) + "월"
    if counter in NATIVE_COUNTERS and 1 <= value <= 99:
        spoken = "첫" if counter == "번째" and value == 1 else native_korean(value)
        return f"{spoken} {counter}"
    return f"{sino_korean(value)} {counter}"


def _strip_non_letters(text: str) -> str:
    """Letters and combining marks stay; format characters go; everything else becomes a space."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] in "LM" or ch == " ":
            out.append(ch)
        elif cat != "Cf":
            out.append(" ")
    return "".join(out)


def normalize_ko(text: str) -> str:
    """Normalise a Korean transcript to the reference convention (see the module docstring)."""
    text = unicodedata.normalize("NFC", text).translate(_FULLWIDTH)
    for symbol, word in _SYMBOL_WORDS:
        text = text.replace(symbol, word)
    text = _THOUSANDS_RE.sub("", text)
    text = _PHONE_RE.sub(lambda m: " ".join(_digit_by_digit(g) for g in m.group(0).split("-")), text)
    text = _CLOCK_RE.sub(r"\1시 \2분", text)
    text = _NUMBER_RE.sub(_number_words, text)
    text = _strip_non_letters(text).lower()
    text = _LATIN_RUN_RE.sub(lambda m: DEVICE_WORDS.get(m.group(0), m.group(0)), text)
    # removing format characters or lowercasing can leave a composable sequence behind
    text = _strip_non_letters(unicodedata.normalize("NFC", text))
    return " ".join(text.split())


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_INNER_APOSTROPHE_RE = re.compile(r"(?<=\w)'(?=\w)")


def normalize_basic(text: str) -> str:
    """Language-neutral normaliser: NFKC, lowercase, punctuation/symbols → spaces, collapsed spaces.

    An apostrophe between two letters is kept (``don't``); digits are kept as digits (a language
    that wants them spelled out brings its own normaliser).
    """
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    text = _INNER_APOSTROPHE_RE.sub("\0", text)  # protect inner apostrophes from the strip below
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        cat = unicodedata.category(ch)
        if cat[0] in "LMN" or ch in " \0":
            out.append(ch)
        elif cat != "Cf":
            out.append(" ")
    text = unicodedata.normalize("NFKC", "".join(out)).replace("\0", "'")
    return " ".join(text.split())


def cer_units(text: str) -> str:
    """The characters CER is computed over for Korean: the text with every space removed.

    Korean spacing (띄어쓰기) is inconsistent even among careful transcribers and a spacing slip is
    not an error a user notices, so CER ignores spaces; WER, which splits on spaces, still counts them.
    """
    return "".join(text.split())


def cer_units_keep_spaces(text: str) -> str:
    """CER units for languages whose spacing is reliable: the text with whitespace collapsed."""
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------

BLANK, UNK, SPACE = "<blank>", "<unk>", " "


class Tokenizer:
    """Base class: maps normalised text to CTC target ids and back.

    ``vocab[0]`` is the CTC blank, ``vocab[1]`` ``<unk>``, ``vocab[2]`` the space. ``decode`` expects
    CTC-collapsed ids; it skips blanks, turns ``<unk>`` and out-of-range ids into ``unk_text`` and
    never raises.
    """

    kind: ClassVar[str] = ""
    blank_id: ClassVar[int] = 0
    unk_id: ClassVar[int] = 1
    space_id: ClassVar[int] = 2
    vocab: list[str]
    unk_text: str

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        """Rebuild the tokenizer ``to_dict`` described (dispatches on ``d["type"]``)."""
        kind = d.get("type")
        try:
            tokenizer_cls = TOKENIZERS[kind]  # type: ignore[index]
        except KeyError as e:
            raise ValueError(f"unknown tokenizer type {kind!r}; available: {', '.join(TOKENIZERS)}") from e
        return tokenizer_cls._from_dict(d)

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={len(self)})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


# Hangul syllable arithmetic (Unicode §3.12): S = 0xAC00 + (L * 21 + V) * 28 + T
_S_BASE, _L_BASE, _V_BASE, _T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
_L_COUNT, _V_COUNT, _T_COUNT = 19, 21, 28  # T_COUNT includes "no final consonant"
_S_COUNT = _L_COUNT * _V_COUNT * _T_COUNT  # 11,172

_CHOSEONG = [chr(_L_BASE + i) for i in range(_L_COUNT)]
_JUNGSEONG = [chr(_V_BASE + i) for i in range(_V_COUNT)]
_JONGSEONG = [chr(_T_BASE + i) for i in range(1, _T_COUNT)]
_JAMO_VOCAB = [BLANK, UNK, SPACE, *_CHOSEONG, *_JUNGSEONG, *_JONGSEONG]
_L0 = 3
_V0 = _L0 + _L_COUNT
_T0 = _V0 + _V_COUNT  # id of the first jongseong (T index 1)


def _compat_letter(jamo: str) -> str:
    """Conjoining jamo → compatibility jamo (ᄏ, ᆨ → ㅋ, ㄱ) via their Unicode names."""
    name = unicodedata.name(jamo)
    for part in ("CHOSEONG", "JUNGSEONG", "JONGSEONG"):
        name = name.replace(part, "LETTER")
    return unicodedata.lookup(name)


def _build_compat_tables() -> tuple[dict[str, int], list[str]]:
    to_compat = [""] * len(_JAMO_VOCAB)
    from_compat: dict[str, int] = {}
    for i in range(_L0, len(_JAMO_VOCAB)):
        compat = _compat_letter(_JAMO_VOCAB[i])
        to_compat[i] = compat
        # a consonant that can start a syllable is read as an initial, else as a final (ㄳ)
        from_compat.setdefault(compat, i)
    return from_compat, to_compat


_FROM_COMPAT, _TO_COMPAT = _build_compat_tables()


class JamoTokenizer(Tokenizer):
    """Korean: every Hangul syllable becomes 2–3 positional conjoining jamo.

    Vocabulary (fixed, 70 symbols): blank, ``<unk>``, space, 19 choseong (U+1100–U+1112),
    21 jungseong (U+1161–U+1175), 27 jongseong (U+11A8–U+11C2). Initial and final forms of the same
    consonant are distinct tokens, so ``decode`` can recompose syllables without guessing.

    ``encode``: syllables → L V [T]; whitespace → space; conjoining jamo → themselves; compatibility
    jamo (ㅋ, ㅏ) → the initial (else final) consonant or the vowel; anything else → ``<unk>``.
    ``decode``: L V [T] runs recompose into syllables; a jamo that cannot be composed (a model that
    emitted a stray ᆫ) is written as its compatibility jamo (ㄴ), never dropped. Text made of
    syllables and spaces round-trips exactly; compatibility jamo round-trip unless they happen to
    spell a syllable (ㅋ followed by ㅏ decodes as 카).
    """

    kind = "jamo"

    def __init__(self, unk_text: str = "") -> None:
        self.vocab = list(_JAMO_VOCAB)
        self.unk_text = unk_text

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for ch in text:
            cp = ord(ch)
            s = cp - _S_BASE
            if 0 <= s < _S_COUNT:
                lv, t = divmod(s, _T_COUNT)
                l_idx, v_idx = divmod(lv, _V_COUNT)
                ids.append(_L0 + l_idx)
                ids.append(_V0 + v_idx)
                if t:
                    ids.append(_T0 + t - 1)
            elif ch.isspace():
                ids.append(self.space_id)
            elif _L_BASE <= cp < _L_BASE + _L_COUNT:
                ids.append(_L0 + cp - _L_BASE)
            elif _V_BASE <= cp < _V_BASE + _V_COUNT:
                ids.append(_V0 + cp - _V_BASE)
            elif _T_BASE < cp < _T_BASE + _T_COUNT:
                ids.append(_T0 + cp - _T_BASE - 1)
            else:
                ids.append(_FROM_COMPAT.get(ch, self.unk_id))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        seq = [int(i) for i in ids if int(i) != self.blank_id]
        out: list[str] = []
        n, i = len(seq), 0
        while i < n:
            k = seq[i]
            if _L0 <= k < _V0 and i + 1 < n and _V0 <= seq[i + 1] < _T0:
                t = 0
                if i + 2 < n and _T0 <= seq[i + 2] < len(_JAMO_VOCAB):
                    t = seq[i + 2] - _T0 + 1
                out.append(chr(_S_BASE + ((k - _L0) * _V_COUNT + seq[i + 1] - _V0) * _T_COUNT + t))
                i += 3 if t else 2
                continue
            if k == self.space_id:
                out.append(" ")
            elif _L0 <= k < len(_JAMO_VOCAB):
                out.append(_TO_COMPAT[k])
            else:  # <unk> or an id outside the vocabulary
                out.append(self.unk_text)
            i += 1
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "vocab": list(self.vocab), "unk_text": self.unk_text}

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> JamoTokenizer:
        tok = cls(unk_text=d.get("unk_text", ""))
        if "vocab" in d and list(d["vocab"]) != tok.vocab:
            raise ValueError(
                f"checkpoint jamo vocabulary ({len(d['vocab'])} symbols) differs from this version's "
                f"fixed vocabulary ({len(tok.vocab)} symbols); the checkpoint cannot be decoded"
            )
        return tok


class CharTokenizer(Tokenizer):
    """One token per character: blank, ``<unk>``, space, then ``symbols`` in the given order.

    Whitespace encodes as the space token; characters outside the vocabulary encode as ``<unk>``
    and decode as ``unk_text``.
    """

    kind = "char"

    def __init__(self, symbols: Iterable[str], unk_text: str = "") -> None:
        symbols = list(symbols)
        bad = [s for s in symbols if len(s) != 1 or s.isspace() or s in (BLANK, UNK)]
        if bad:
            raise ValueError(f"CharTokenizer symbols must be single non-space characters; got {bad[:5]!r}")
        if len(set(symbols)) != len(symbols):
            raise ValueError("CharTokenizer symbols contain duplicates")
        self.vocab = [BLANK, UNK, SPACE, *symbols]
        self.unk_text = unk_text
        self._ids = {s: i for i, s in enumerate(self.vocab) if i > self.space_id}

    @classmethod
    def build(cls, texts: Iterable[str], unk_text: str = "") -> CharTokenizer:
        """Vocabulary = every non-space character in ``texts`` (normalised text), sorted."""
        chars = {ch for text in texts for ch in text if not ch.isspace()}
        return cls(sorted(chars), unk_text=unk_text)

    def encode(self, text: str) -> list[int]:
        return [self.space_id if ch.isspace() else self._ids.get(ch, self.unk_id) for ch in text]

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        n = len(self.vocab)
        for i in ids:
            i = int(i)
            if i == self.blank_id:
                continue
            out.append(self.vocab[i] if self.space_id <= i < n else self.unk_text)
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "symbols": self.vocab[3:], "unk_text": self.unk_text}

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        return cls(d["symbols"], unk_text=d.get("unk_text", ""))


TOKENIZERS: dict[str, type[Tokenizer]] = {cls.kind: cls for cls in (JamoTokenizer, CharTokenizer)}


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Same as ``Tokenizer.from_dict``."""
    return Tokenizer.from_dict(d)


# --------------------------------------------------------------------------------------------------
# Language packs
# --------------------------------------------------------------------------------------------------

TokenizerFactory = Callable[[Sequence[str] | None], Tokenizer]


def _jamo_factory(texts: Sequence[str] | None = None) -> Tokenizer:
    return JamoTokenizer()


ENGLISH_SYMBOLS = tuple("abcdefghijklmnopqrstuvwxyz'")


def _english_factory(texts: Sequence[str] | None = None) -> Tokenizer:
    return CharTokenizer(ENGLISH_SYMBOLS)


def char_tokenizer_factory(texts: Sequence[str] | None = None) -> Tokenizer:
    """Factory for a language without a fixed alphabet: the characters of the training texts."""
    if texts is None:
        raise ValueError("a character vocabulary is learnt from texts; pass the normalised training texts")
    return CharTokenizer.build(texts)


@dataclass(frozen=True)
class LanguagePack:
    """Everything language-specific the ASR core needs; chosen once by ``code``.

    ``normalize``: transcript normaliser (idempotent). ``tokenizer_factory(texts | None)``: builds
    the tokenizer (fixed alphabets ignore ``texts``). ``cer_units``: what CER counts.
    """

    code: str
    normalize: Callable[[str], str]
    tokenizer_factory: TokenizerFactory
    cer_units: Callable[[str], str] = cer_units_keep_spaces


LANGUAGE_PACKS: dict[str, LanguagePack] = {
    "ko": LanguagePack("ko", normalize_ko, _jamo_factory, cer_units),
    "en": LanguagePack("en", normalize_basic, _english_factory),
}


def get_language_pack(code: str) -> LanguagePack:
    try:
        return LANGUAGE_PACKS[code]
    except KeyError as e:
        raise ValueError(f"unknown language {code!r}; available: {', '.join(sorted(LANGUAGE_PACKS))}") from e


def make_tokenizer(pack: LanguagePack | str, texts: Sequence[str] | None = None) -> Tokenizer:
    """Build ``pack``'s tokenizer; ``texts`` (normalised) are used only by learnt vocabularies."""
    if isinstance(pack, str):
        pack = get_language_pack(pack)
    return pack.tokenizer_factory(list(texts) if texts is not None else None)
