"""eSpeak NG speech synthesis through ctypes, against the library shipped in ``espeakng_loader``.

Nothing is downloaded and no subprocess is run. The C library keeps its synthesiser state
in process globals, so :class:`EspeakEngine` is a per-process singleton guarded by a lock.

Determinism: eSpeak carries hidden state from one utterance to the next (pitch-flutter
phase, automatic gain, echo buffer, its random generator), so the same text spoken after
different predecessors comes out a few samples different. To make every utterance a pure
function of (text, voice, seed) the engine loads a *private copy* of the shared library,
and re-loads it (dlclose + dlopen + espeak_Initialize, about 0.5 ms) before each utterance,
then seeds both eSpeak's and libc's random generators.
"""

from __future__ import annotations

import _ctypes
import ctypes
import ctypes.util
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.util import Finalize
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# espeak_AUDIO_OUTPUT / espeak_PARAMETER / position and text-encoding values from speak_lib.h.
_AUDIO_OUTPUT_RETRIEVAL = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class VoiceSettings:
    """How eSpeak should speak one utterance.

    language: eSpeak voice name ("ko"); variant: a file in ``espeak-ng-data/voices/!v``
    ("m3", "f2", "grandpa") or None; rate: words per minute (80-450); pitch and
    pitch_range: eSpeak's 0-100 scales (50 = the variant's own base pitch / range);
    word_gap: extra pause between words in units of 10 ms at the default rate.
    """

    language: str = "ko"
    variant: str | None = None
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50
    word_gap: int = 0

    @property
    def voice_name(self) -> str:
        return f"{self.language}+{self.variant}" if self.variant else self.language


def _data_path() -> str:
    import espeakng_loader

    return espeakng_loader.get_data_path()


@lru_cache(maxsize=1)
def available_variants() -> tuple[str, ...]:
    """Names of the voice variants shipped with the eSpeak data (``voices/!v``)."""
    variant_dir = Path(_data_path()) / "voices" / "!v"
    return tuple(sorted(p.name for p in variant_dir.iterdir() if p.is_file()))


class EspeakEngine:
    """The process-wide eSpeak NG synthesiser. Use :meth:`get`; never construct it twice."""

    _instance: EspeakEngine | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        # A private copy, so no other user of libespeak-ng in this process pins its state.
        self._tmpdir = Path(tempfile.mkdtemp(prefix="voiceloop-espeak-"))
        # Finalize (not atexit) also runs when a multiprocessing worker exits.
        Finalize(None, shutil.rmtree, args=(self._tmpdir, True), exitpriority=0)
        self._lib_path = self._tmpdir / "libespeak-ng-private.so"
        shutil.copyfile(espeakng_loader.get_library_path(), self._lib_path)
        self._data_path = _data_path().encode()
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"))
        # Keep a reference: the C side holds only a raw pointer to the callback.
        self._callback = _SynthCallback(self._on_audio)
        lib = self._load()
        self.sample_rate: int = self._last_rate
        self._unload(lib)
        logger.debug("eSpeak NG ready at %d Hz (private copy %s)", self.sample_rate, self._lib_path)

    @classmethod
    def get(cls) -> EspeakEngine:
        """The singleton engine of this process, initialised on first use."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _load(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(str(self._lib_path))
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_RETRIEVAL, 0, self._data_path, 0)
        if rate <= 0:
            self._unload(lib)
            raise RuntimeError(f"espeak_Initialize failed (returned {rate}); data at {self._data_path!r}")
        self._last_rate = rate
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        return lib

    @staticmethod
    def _unload(lib: ctypes.CDLL) -> None:
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)

    def _on_audio(self, wav, num_samples, events) -> int:  # noqa: ANN001 - ctypes callback
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = keep synthesising

    def synthesize(self, text: str, voice: VoiceSettings = VoiceSettings(), seed: int = 0) -> np.ndarray:
        """Speak ``text``; returns float32 samples in [-1, 1] at :attr:`sample_rate` Hz (22050).

        The result depends only on (text, voice, seed). Raises ValueError when the text
        contains a digit: eSpeak would read it by its own rules, so the grammar spells
        numbers out first.
        """
        if any(ch.isdigit() for ch in text):
            raise ValueError(f"digits must be spelled out before synthesis: {text!r}")
        if voice.variant is not None and voice.variant not in available_variants():
            raise ValueError(f"unknown eSpeak variant {voice.variant!r}; available: {available_variants()}")
        encoded = text.encode("utf-8")
        with self._lock:
            self._chunks = []
            lib = self._load()
            try:
                if lib.espeak_SetVoiceByName(voice.voice_name.encode()) != 0:
                    raise ValueError(f"eSpeak has no voice {voice.voice_name!r}")
                # Set after the voice: selecting a voice resets some parameters.
                for param, value in ((_RATE, voice.rate), (_PITCH, voice.pitch), (_RANGE, voice.pitch_range),
                                     (_WORDGAP, voice.word_gap), (_VOLUME, 100)):
                    lib.espeak_SetParameter(param, int(value), 0)
                lib.espeak_ng_SetRandSeed(seed & 0x7FFFFFFF)
                self._libc.srand(seed & 0xFFFFFFFF)  # breathy variants draw from libc rand()
                err = lib.espeak_Synth(ctypes.c_char_p(encoded), len(encoded) + 1, 0, _POS_CHARACTER, 0,
                                       _CHARS_UTF8, None, None)
                if err != 0:
                    raise RuntimeError(f"espeak_Synth failed with code {err} for {text!r}")
                lib.espeak_Synchronize()
            finally:
                self._unload(lib)
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32) / np.float32(32768.0)
