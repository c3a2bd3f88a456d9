"""The synthetic speech studio: grammar, eSpeak, environments, plans, manifests, determinism."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from collection.manifest import (
    RECORDINGS,
    SLICE_KEYS,
    SUPERVISIONS,
    AudioSource,
    Recording,
    Supervision,
    load_split,
    manifest_hash,
    read_jsonl,
    write_jsonl,
)
from collection.studio import ENVIRONMENTS, EspeakEngine, VoiceSettings, load_grammar, load_plan, synthesize_plan
from collection.studio.environments import measured_snr_db, mix_at_snr
from collection.studio.grammar import NumberSpeller
from collection.studio.plan import PLAN_DIR, plan_utterances

SPLITS = ["train", "dev", "test_seen", "test_unseen", "test_heldout"]
RECORDING_KEYS = {"id", "sources", "sampling_rate", "num_samples", "duration", "channel_ids"}
SUPERVISION_KEYS = {"id", "recording_id", "start", "duration", "channel", "text", "language", "speaker", "gender",
                    "custom"}
CUSTOM_KEYS = {"age_band", "dialect", "environment", "snr_db", "persona", "voice", "sentence_id", "standard_text",
               "command", "split", "seen_sentence", "source"}


def tiny_spec() -> dict:
    return yaml.safe_load((PLAN_DIR / "tiny.yaml").read_text(encoding="utf-8"))


def audio_digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "audio").glob("*.wav"))}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny.yaml rendered twice (one process, then two worker processes) and once with another seed."""
    base = tmp_path_factory.mktemp("studio")
    synthesize_plan("tiny", base / "a", workers=1, progress=False)
    synthesize_plan("tiny", base / "b", workers=2, progress=False)
    other = tiny_spec()
    other["seed"] = 8
    synthesize_plan(other, base / "c", workers=1, progress=False)
    return {"a": base / "a", "b": base / "b", "c": base / "c"}


@pytest.fixture(scope="module")
def demo_specs():
    return plan_utterances(load_plan("demo"))


# --- grammar -----------------------------------------------------------------------------------

def test_grammar_has_400_distinct_sentences_and_no_digits():
    g = load_grammar()
    texts = [s.text for s in g.sentences]
    assert len(set(texts)) == len(texts) >= 400
    assert not any(ch.isdigit() for t in texts for ch in t)
    rng = np.random.default_rng(0)
    for dialect in g.dialects:
        for s in g.sentences:
            spoken = g.render(s, dialect, rng)
            assert not any(ch.isdigit() for ch in spoken.text), spoken
            assert spoken.standard_text == s.text and spoken.command == s.command
    for s in g.sentences:
        assert set(s.command) == {"intent", "device", "room", "action", "value"}


def test_dialects_change_most_sentences():
    g = load_grammar()
    rng = np.random.default_rng(1)
    for dialect in ("gyeongsang", "jeolla"):
        changed = sum(g.render(s, dialect, rng).text != s.text for s in g.sentences)
        assert changed > 0.9 * len(g.sentences), dialect


def test_number_and_particle_conventions():
    g = load_grammar()
    spell = NumberSpeller(yaml.safe_load((Path(__file__).parents[2] / "collection/grammar/ko_commands.yaml")
                                         .read_text(encoding="utf-8"))["numerals"])
    assert [spell.sino(n) for n in (0, 10, 11, 24, 100, 45)] == ["영", "십", "십일", "이십사", "백", "사십오"]
    natives = ["한", "두", "세", "네", "열", "열한", "열두", "스무"]
    assert [spell.native(n) for n in (1, 2, 3, 4, 10, 11, 12, 20)] == natives
    by_text = {s.text: s.command for s in g.sentences}
    assert by_text["볼륨 삼으로 해줘"]["value"] == 3
    assert by_text["볼륨 칠로 해줘"]["value"] == 7
    assert by_text["일곱 시 삼십 분에 알람 맞춰줘"]["value"] == "07:30"
    assert by_text["오후 다섯 시에 알람 맞춰줘"]["value"] == "17:00"
    assert by_text["십 분 타이머"]["value"] == 600
    assert by_text["거실 에어컨 온도 이십사 도로 맞춰줘"] == {
        "intent": "temperature", "device": "aircon", "room": "living_room", "action": "set", "value": 24}


# --- eSpeak ------------------------------------------------------------------------------------

def test_espeak_refuses_digits_and_is_deterministic():
    engine = EspeakEngine.get()
    with pytest.raises(ValueError, match="digits"):
        engine.synthesize("볼륨 3으로 해줘")
    voice = VoiceSettings(variant="f5", rate=160)
    first = engine.synthesize("거실 불 켜줘", voice, seed=3)
    engine.synthesize("내일 날씨 어때", VoiceSettings(variant="m3"), seed=9)  # would leak state into the next
    again = engine.synthesize("거실 불 켜줘", voice, seed=3)
    assert engine.sample_rate == 22050 and len(first) > 0.5 * 22050
    assert np.array_equal(first, again)


# --- environments ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ENVIRONMENTS))
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_environment_mixes_at_requested_snr(name: str, snr_db: float):
    sr = 16000
    t = np.arange(2 * sr) / sr
    known = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    mix = ENVIRONMENTS[name].render(known, sr, np.random.default_rng(5), snr_db=snr_db)
    assert mix.audio.shape == known.shape
    if name != "far_field":  # far_field's reference is the reverberant speech
        assert np.allclose(mix.speech, known)
    measured = measured_snr_db(mix.speech, mix.audio - mix.speech)
    assert abs(measured - snr_db) <= 1.0


def test_mix_at_snr_rejects_length_mismatch():
    with pytest.raises(ValueError, match="lengths"):
        mix_at_snr(np.ones(10), np.ones(11), 10.0)


# --- plans -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, key, option", [
    (lambda p: p.update(colour="red"), "colour", "splits"),
    (lambda p: p.pop("seed"), "seed", None),
    (lambda p: p["splits"]["train"]["speakers"][0].update(age_bands=["teens"]), "age_bands", "70s+"),
    (lambda p: p["splits"]["train"]["speakers"][0].update(dialects=["klingon"]), "dialects", "gyeongsang"),
    (lambda p: p.update(environments={"subway": 1.0}), "environments", "far_field"),
    (lambda p: p["splits"]["dev"].update(sentences="some"), "sentences", "unseen"),
    (lambda p: p["splits"]["dev"].update(utterances_per_speaker=0), "utterances_per_speaker", None),
    (lambda p: p.update(sentence_holdout=0), "sentence_holdout", None),
    (lambda p: p.update(grammar="nope"), "grammar", "ko_commands"),
])
def test_plan_validation_names_key_and_options(mutate, key, option):
    spec = tiny_spec()
    mutate(spec)
    with pytest.raises(ValueError) as err:
        load_plan(spec)
    assert key in str(err.value)
    if option:
        assert option in str(err.value)


def test_demo_plan_splits(demo_specs):
    sizes = {k: len(v) for k, v in demo_specs.items()}
    assert sizes == {"train": 2400, "dev": 200, "test_seen": 300, "test_unseen": 300, "test_heldout": 400}
    speakers = {k: {s.persona.id for s in v} for k, v in demo_specs.items()}
    assert len(speakers["train"]) == 120
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not speakers[a] & speakers[b], (a, b)
    train = demo_specs["train"]
    assert {s.persona.dialect for s in train} == {"standard"}
    assert {s.persona.age_band for s in train} <= {"20s", "30s", "40s", "50s"}
    heldout = demo_specs["test_heldout"]
    assert {s.persona.dialect for s in heldout} == {"standard", "gyeongsang", "jeolla"}
    assert {s.persona.age_band for s in heldout if s.persona.dialect == "standard"} == {"60s", "70s+"}
    train_texts = {s.sentence.standard_text for s in train}
    assert not {s.sentence.standard_text for s in demo_specs["test_unseen"]} & train_texts
    assert not {s.sentence.text for s in demo_specs["test_unseen"]} & {s.sentence.text for s in train}
    assert all(s.seen_sentence for s in demo_specs["test_seen"])
    assert not any(s.seen_sentence for s in demo_specs["test_unseen"])
    quiet = sum(s.environment == "quiet" for s in train) / len(train)
    assert abs(quiet - 0.4) < 0.01
    dialect_utts = [s for s in heldout if s.persona.dialect != "standard"]
    assert sum(s.sentence.text != s.sentence.standard_text for s in dialect_utts) > 0.8 * len(dialect_utts)


def test_planning_is_deterministic():
    a = plan_utterances(load_plan("tiny"))
    b = plan_utterances(load_plan("tiny"))
    assert a == b


# --- synthesis + manifests ---------------------------------------------------------------------

def test_a_split_rendered_alone_reads_as_with_the_rest(tiny_runs, tmp_path):
    alone = synthesize_plan("tiny", tmp_path, workers=1, progress=False, splits=["test_heldout"])
    assert list(alone) == ["test_heldout"]
    together = tiny_runs["a"] / "test_heldout"
    assert (alone["test_heldout"] / RECORDINGS).read_bytes() == (together / RECORDINGS).read_bytes()
    assert set(audio_digests(tmp_path).items()) <= set(audio_digests(tiny_runs["a"]).items())
    with pytest.raises(ValueError, match="no split"):
        synthesize_plan("tiny", tmp_path, progress=False, splits=["nope"])


def test_same_seed_gives_identical_bytes(tiny_runs):
    a, b = tiny_runs["a"], tiny_runs["b"]
    assert manifest_hash(a) == manifest_hash(b)
    for split in SPLITS:
        assert (a / split / RECORDINGS).read_bytes() == (b / split / RECORDINGS).read_bytes()
        assert (a / split / SUPERVISIONS).read_bytes() == (b / split / SUPERVISIONS).read_bytes()
    digests = audio_digests(a)
    assert len(digests) == 40 and digests == audio_digests(b)


def test_different_seed_differs(tiny_runs):
    assert manifest_hash(tiny_runs["a"]) != manifest_hash(tiny_runs["c"])
    assert set(audio_digests(tiny_runs["a"]).values()) != set(audio_digests(tiny_runs["c"]).values())


def test_rerun_skips_existing_audio(tiny_runs):
    root = tiny_runs["a"]
    before = {p.name: p.stat().st_mtime_ns for p in (root / "audio").glob("*.wav")}
    h = manifest_hash(root)
    dirs = synthesize_plan("tiny", root, progress=False)
    assert sorted(dirs) == sorted(SPLITS) and all(d.parent == root for d in dirs.values())
    assert {p.name: p.stat().st_mtime_ns for p in (root / "audio").glob("*.wav")} == before
    assert manifest_hash(root) == h


def test_manifest_fields_are_exact(tiny_runs):
    root = tiny_runs["a"]
    for split in SPLITS:
        recs = list(read_jsonl(root / split / RECORDINGS))
        sups = list(read_jsonl(root / split / SUPERVISIONS))
        assert recs and len(recs) == len(sups)
        for r in recs:
            assert set(r) == RECORDING_KEYS
            assert r["sources"] == [{"type": "file", "channels": [0], "source": f"audio/{r['id']}.wav"}]
            assert r["sampling_rate"] == 16000 and r["channel_ids"] == [0]
            assert r["duration"] == r["num_samples"] / 16000
        for s in sups:
            assert set(s) == SUPERVISION_KEYS and set(s["custom"]) == CUSTOM_KEYS
            assert s["start"] == 0.0 and s["channel"] == 0 and s["language"] == "ko"
            assert s["custom"]["split"] == split and s["custom"]["source"] == "synthetic"
            assert not any(ch.isdigit() for ch in s["text"])


def test_manifest_round_trip(tmp_path: Path):
    rec = Recording("r1", [AudioSource("file", [0], "audio/r1.wav")], 16000, 32000, 2.0, [0])
    sup = Supervision("r1", "r1", 0.0, 2.0, 0, "거실 불 켜줘", "ko", "spk", "female",
                      {"dialect": "standard", "command": {"intent": "power", "value": None}, "snr_db": 12.5})
    write_jsonl(tmp_path / "s" / RECORDINGS, [rec])
    write_jsonl(tmp_path / "s" / SUPERVISIONS, [sup])
    assert [Recording.from_dict(d) for d in read_jsonl(tmp_path / "s" / RECORDINGS)] == [rec]
    assert [Supervision.from_dict(d) for d in read_jsonl(tmp_path / "s" / SUPERVISIONS)] == [sup]
    line = (tmp_path / "s" / SUPERVISIONS).read_text(encoding="utf-8")
    assert "거실" in line and json.loads(line)["custom"]["snr_db"] == 12.5
    (utt,) = load_split(tmp_path / "s")
    assert utt.audio_path == (tmp_path / "audio" / "r1.wav").resolve()
    assert utt.slices == {"dialect": "standard", "age_band": "unknown", "gender": "female",
                          "environment": "unknown", "source": "unknown"}


def test_splits_and_audio(tiny_runs):
    root = tiny_runs["a"]
    utts = {split: load_split(root / split) for split in SPLITS}
    speakers = {split: {u.speaker for u in us} for split, us in utts.items()}
    assert sum(len(s) for s in speakers.values()) == len(set().union(*speakers.values()))
    train_texts = {u.supervision.custom["standard_text"] for u in utts["train"]}
    assert not {u.supervision.custom["standard_text"] for u in utts["test_unseen"]} & train_texts
    assert {u.slices["dialect"] for u in utts["train"]} == {"standard"}
    assert not {u.slices["age_band"] for u in utts["train"]} & {"60s", "70s+"}
    heldout = {(u.slices["dialect"], u.slices["age_band"]) for u in utts["test_heldout"]}
    assert heldout == {("gyeongsang", "30s"), ("standard", "70s+")}
    for us in utts.values():
        for u in us:
            assert set(u.slices) == set(SLICE_KEYS) and u.slices["source"] == "synthetic"
            assert u.command["intent"] and u.audio_path.is_absolute()
            audio, sr = sf.read(u.audio_path, dtype="float32")
            assert sr == 16000 and audio.ndim == 1 and len(audio) == u.recording.num_samples
            assert np.abs(audio).max() <= 1.0
            assert np.sqrt(np.mean(audio**2)) > 0.01  # about -40 dBFS: not silent
            assert 0.7 < u.duration < 7.0


def test_manifest_hash_is_stable_and_line_order_free(tiny_runs, tmp_path: Path):
    src = tiny_runs["a"] / "dev"
    dst = tmp_path / "dev"
    dst.mkdir()
    for name in (RECORDINGS, SUPERVISIONS):
        lines = (src / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (dst / name).write_text("".join(reversed(lines)), encoding="utf-8")
    assert manifest_hash(src) == manifest_hash(dst)
    spec = copy.deepcopy(tiny_spec())
    assert load_plan(spec) == load_plan("tiny")


def test_command_lexicon_lists_device_and_room_names():
    from collection.studio import command_lexicon

    words = command_lexicon()
    assert {"거실", "안방", "티비", "에어컨", "로봇청소기"} <= set(words)
    assert words == sorted(set(words))
