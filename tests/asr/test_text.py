import json
import random

import pytest

from asr.text import (
    CharTokenizer,
    JamoTokenizer,
    LanguagePack,
    Tokenizer,
    cer_units,
    get_language_pack,
    make_tokenizer,
    native_korean,
    normalize_basic,
    normalize_ko,
    sino_korean,
    tokenizer_from_dict,
)

ALL_SYLLABLES = "".join(chr(c) for c in range(0xAC00, 0xD7A4))


# ---------------------------------------------------------------- Korean normaliser


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7시", "일곱 시"),
        ("3시간", "세 시간"),
        ("12시", "열두 시"),
        ("30분", "삼십 분"),
        ("25도", "이십오 도"),
        ("3으로", "삼으로"),
        ("50%", "오십 퍼센트"),
        ("50퍼센트", "오십 퍼센트"),
        ("7번 채널", "칠 번 채널"),
        ("10단계", "십 단계"),
        ("2026", "이천이십육"),
        ("볼륨 3으로 해줘.", "볼륨 삼으로 해줘"),
        ("내일 아침 7시에 깨워줘", "내일 아침 일곱 시에 깨워줘"),
        ("에어컨 온도 25도로 맞춰 줘!", "에어컨 온도 이십오 도로 맞춰 줘"),
        ("1시간 30분 뒤에 꺼줘", "한 시간 삼십 분 뒤에 꺼줘"),
        ("7:30에 알람", "일곱 시 삼십 분에 알람"),
        ("1번째", "첫 번째"),
        ("2번째", "두 번째"),
        ("20살", "스무 살"),
        ("21명", "스물한 명"),
        ("커피 2잔", "커피 두 잔"),
        ("고양이 3마리", "고양이 세 마리"),
        ("사과 4개", "사과 네 개"),
        ("100명", "백 명"),
        ("0시", "영 시"),
        ("3개월", "삼 개월"),
        ("6월 10일", "유월 십 일"),
        ("10월", "시월"),
        ("3월", "삼월"),
        ("1,000원", "천 원"),
        ("3.5도", "삼점오 도"),
        ("10000", "만"),
        ("15000", "만오천"),
        ("110000", "십일만"),
        ("100000000", "일억"),
        ("010-1234-5678", "공일공 일이삼사 오육칠팔"),
        ("０７시", "일곱 시"),
        ("３％", "삼 퍼센트"),
        ("거실 TV 켜줘", "거실 티비 켜줘"),
        ("TV를 꺼", "티비를 꺼"),
    ],
)
def test_normalize_ko_examples(raw, expected):
    assert normalize_ko(raw) == expected


def test_normalize_ko_punctuation_and_spacing():
    assert normalize_ko("  거실,   불 \t 켜줘?!  ") == "거실 불 켜줘"
    assert normalize_ko("「안방」 에어컨…꺼 줘~") == "안방 에어컨 꺼 줘"
    assert normalize_ko("로봇\u200b청소기") == "로봇청소기"  # zero-width space removed, not spaced
    assert normalize_ko("Hello WORLD") == "hello world"
    assert normalize_ko("") == ""
    assert normalize_ko("?!.") == ""


def test_normalize_ko_nfc():
    decomposed = "\u1100\u1161\u11a8"  # conjoining jamo for 각
    assert normalize_ko(decomposed) == "각"


def test_number_helpers():
    assert sino_korean(0) == "영"
    assert sino_korean(11) == "십일"
    assert sino_korean(101) == "백일"
    assert sino_korean(1234) == "천이백삼십사"
    assert sino_korean(20000) == "이만"
    assert sino_korean("007") == "공공칠"
    assert [native_korean(n) for n in (1, 2, 3, 4, 10, 11, 20, 99)] == [
        "한", "두", "세", "네", "열", "열한", "스무", "아흔아홉",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        native_korean(100)


def _random_text(rng: random.Random, n: int) -> str:
    pool = (
        list("0123456789") * 3
        + list(" \t\n.,!?%:-~'\"()[]℃°·…")
        + list("거실안방티비켜줘시간분도번째개살명잔마리월일퍼센트")
        + list("abcXYZ")
        + ["\u200b", "\u0301", "\u1100", "\u1161", "\u11a8", "ㅋ", "３", "％", "Ｔ", "İ", "ß", "①", "½"]
    )
    return "".join(rng.choice(pool) for _ in range(n))


def test_normalize_ko_idempotent_fuzz():
    rng = random.Random(0)
    for _ in range(3000):
        text = _random_text(rng, rng.randint(0, 30))
        once = normalize_ko(text)
        assert normalize_ko(once) == once, (text, once)
        assert not any(ch.isdigit() for ch in once)
        assert "  " not in once and once == once.strip()


def test_normalize_basic():
    assert normalize_basic("Hello,  World!") == "hello world"
    assert normalize_basic("Don’t STOP — it's 3 o'clock") == "don't stop it's 3 o'clock"
    assert normalize_basic("'quoted'") == "quoted"
    assert normalize_basic("Ｆｕｌｌ") == "full"
    rng = random.Random(1)
    for _ in range(2000):
        text = _random_text(rng, rng.randint(0, 30))
        once = normalize_basic(text)
        assert normalize_basic(once) == once, (text, once)


def test_cer_units_ignore_spaces():
    assert cer_units("거실 티비  켜줘") == "거실티비켜줘"
    assert get_language_pack("ko").cer_units("거실 티비") == "거실티비"
    assert get_language_pack("en").cer_units("turn  on") == "turn on"


# ---------------------------------------------------------------- Jamo tokenizer


def test_jamo_vocab_layout():
    tok = JamoTokenizer()
    assert len(tok) == 70
    assert tok.blank_id == 0
    assert tok.vocab[:3] == ["<blank>", "<unk>", " "]
    assert len(set(tok.vocab)) == len(tok.vocab)


def test_jamo_round_trips_every_syllable():
    tok = JamoTokenizer()
    ids = tok.encode(ALL_SYLLABLES)
    assert tok.blank_id not in ids and tok.unk_id not in ids
    assert tok.decode(ids) == ALL_SYLLABLES
    for ch in ALL_SYLLABLES:
        assert tok.decode(tok.encode(ch)) == ch


def test_jamo_initial_and_final_are_distinct():
    tok = JamoTokenizer()
    # 각: ᄀ ᅡ ᆨ — the initial and final ㄱ are different tokens
    ids = tok.encode("각")
    assert len(ids) == 3 and ids[0] != ids[2]
    assert [tok.vocab[i] for i in ids] == ["\u1100", "\u1161", "\u11a8"]


@pytest.mark.parametrize(
    "sentence",
    ["거실 티비 켜줘", "볼륨 삼으로 해줘", "안방  에어컨 꺼", " 앞뒤 공백 ", "닭 값 읽고 앉아", "ㅋㅋ 웃겨"],
)
def test_jamo_round_trips_sentences(sentence):
    tok = JamoTokenizer()
    assert tok.decode(tok.encode(sentence)) == sentence


def test_jamo_round_trips_random_normalised_sentences():
    tok = JamoTokenizer()
    rng = random.Random(2)
    for _ in range(500):
        words = ["".join(rng.choice(ALL_SYLLABLES) for _ in range(rng.randint(1, 5))) for _ in range(4)]
        text = normalize_ko(" ".join(words) + f" {rng.randint(0, 3000)}시")
        assert tok.decode(tok.encode(text)) == text


def test_jamo_unknown_characters():
    tok = JamoTokenizer()
    ids = tok.encode("거실 abc!")
    assert ids.count(tok.unk_id) == 4
    assert tok.decode(ids) == "거실 "
    assert JamoTokenizer(unk_text="⁇").decode(ids) == "거실 ⁇⁇⁇⁇"


def test_jamo_decode_never_crashes_and_writes_stray_jamo_as_compat():
    tok = JamoTokenizer()
    final_n = tok.vocab.index("\u11ab")  # jongseong ᆫ
    vowel_a = tok.vocab.index("\u1161")
    initial_g = tok.vocab.index("\u1100")
    assert tok.decode([final_n]) == "ㄴ"
    assert tok.decode([vowel_a]) == "ㅏ"
    assert tok.decode([initial_g]) == "ㄱ"
    assert tok.decode([initial_g, vowel_a, final_n, final_n]) == "간ㄴ"
    assert tok.decode([0, initial_g, 0, vowel_a]) == "가"  # blanks are skipped
    assert tok.decode([999, -5]) == ""
    rng = random.Random(3)
    for _ in range(2000):
        ids = [rng.randrange(-2, len(tok) + 2) for _ in range(rng.randint(0, 20))]
        assert isinstance(tok.decode(ids), str)


def test_tokenizer_dict_round_trip():
    for tok in (JamoTokenizer(), JamoTokenizer(unk_text="?"), CharTokenizer.build(["hello world"])):
        d = json.loads(json.dumps(tok.to_dict()))
        back = Tokenizer.from_dict(d)
        assert type(back) is type(tok)
        assert back.vocab == tok.vocab and back.unk_text == tok.unk_text
        assert back == tok
        assert tokenizer_from_dict(d) == tok


def test_tokenizer_from_dict_errors():
    with pytest.raises(ValueError, match="available: jamo, char"):
        Tokenizer.from_dict({"type": "bpe"})
    d = JamoTokenizer().to_dict()
    d["vocab"] = d["vocab"][:-1]
    with pytest.raises(ValueError, match="differs"):
        Tokenizer.from_dict(d)


# ---------------------------------------------------------------- Char tokenizer


def test_char_tokenizer():
    tok = CharTokenizer.build(["turn on", "off"])
    assert tok.vocab[:3] == ["<blank>", "<unk>", " "]
    assert tok.vocab[3:] == sorted(set("turnonoff") - {" "})
    ids = tok.encode("turn off")
    assert tok.decode(ids) == "turn off"
    assert tok.encode("z")[0] == tok.unk_id
    assert tok.decode(tok.encode("tz")) == "t"
    assert tok.decode([0, 999]) == ""
    with pytest.raises(ValueError):
        CharTokenizer(["ab"])
    with pytest.raises(ValueError):
        CharTokenizer(["a", "a"])


# ---------------------------------------------------------------- language packs


def test_language_packs():
    ko = get_language_pack("ko")
    assert isinstance(ko, LanguagePack) and ko.code == "ko"
    assert ko.normalize("7시") == "일곱 시"
    assert isinstance(make_tokenizer(ko), JamoTokenizer)
    assert isinstance(make_tokenizer("ko", ["무시됨"]), JamoTokenizer)

    en = get_language_pack("en")
    tok = make_tokenizer(en)
    assert isinstance(tok, CharTokenizer)
    assert tok.vocab[3:] == list("abcdefghijklmnopqrstuvwxyz'")
    assert len(tok) == 30
    text = en.normalize("Don't turn OFF the TV!")
    assert tok.decode(tok.encode(text)) == text == "don't turn off the tv"


def test_unknown_language_names_available_codes():
    with pytest.raises(ValueError, match=r"unknown language 'xx'; available: en, ko"):
        get_language_pack("xx")
