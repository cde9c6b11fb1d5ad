"""Forced alignment of recorded speech to its transcript: PocketSphinx (CMU Sphinx, en-us model in the wheel).

    phones = align.align(wav_16k, "the words that were said")     # list of phonemes.Phone, 10 ms steps

The decoder is run twice, as PocketSphinx's own alignment example does: once constrained to the transcript
to get word boundaries, then in alignment mode for phones. Words missing from the CMU dictionary (names,
numbers) get their pronunciation from espeak-ng (through Piper's bundled phonemizer), mapped to ARPAbet.
English only: the acoustic model is en-us.
"""
from __future__ import annotations

import functools
import logging
import re

import numpy as np

from .audio import SAMPLE_RATE
from .errors import InputError
from .phonemes import SILENCE, Phone

log = logging.getLogger(__name__)

FRAME_S = 0.01  # PocketSphinx frames are 10 ms

ARPABET_TO_IPA = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "aʊ", "AY": "aɪ", "B": "b", "CH": "tʃ", "D": "d", "DH": "ð",
    "EH": "ɛ", "ER": "ɝ", "EY": "eɪ", "F": "f", "G": "ɡ", "HH": "h", "IH": "ɪ", "IY": "i", "JH": "dʒ", "K": "k",
    "L": "l", "M": "m", "N": "n", "NG": "ŋ", "OW": "oʊ", "OY": "ɔɪ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ",
    "T": "t", "TH": "θ", "UH": "ʊ", "UW": "u", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}
# espeak-ng en-us IPA -> ARPAbet, longest symbols first (for words the dictionary lacks)
_IPA_TO_ARPABET = sorted({**{v: k for k, v in ARPABET_TO_IPA.items()}, "ə": "AH", "ɚ": "ER", "ɐ": "AH", "ɾ": "T",
                          "ᵻ": "IH", "ɡ": "G", "g": "G", "o": "OW", "e": "EY", "a": "AA", "ɜ": "ER", "r": "R",
                          "i": "IY", "ʔ": "T", "ɬ": "L", "n̩": "N", "ɑ": "AA", "ɒ": "AA", "x": "K"}.items(),
                         key=lambda kv: -len(kv[0]))


def _decoder():
    """A fresh decoder per alignment: alignment mode leaves state behind that breaks the next utterance."""
    from pocketsphinx import Decoder

    return Decoder(samprate=SAMPLE_RATE, lm=None, loglevel="FATAL")


def _words(transcript: str) -> list[str]:
    text = transcript.lower().replace("’", "'")
    return re.findall(r"[^\W_]+(?:'[^\W_]+)*", text)


def _espeak_arpabet(word: str) -> str | None:
    from piper.phonemize_espeak import EspeakPhonemizer

    ipa = "".join("".join(s) for s in EspeakPhonemizer().phonemize("en-us", word))
    ipa = re.sub(r"[ˈˌː.,!?;: ]", "", ipa)
    out = []
    while ipa:
        for sym, arpa in _IPA_TO_ARPABET:
            if ipa.startswith(sym):
                out.append(arpa)
                ipa = ipa[len(sym):]
                break
        else:
            ipa = ipa[1:]  # a mark or letter with no ARPAbet counterpart
    return " ".join(out) or None


def align(wav: np.ndarray, transcript: str) -> list[Phone]:
    """Speech (n,) float32 16 kHz + what was said -> phones (IPA symbols, seconds); raises InputError when the
    transcript has no words or cannot be aligned to the audio."""
    words = _words(transcript)
    if not words:
        raise InputError("the transcript has no words to align")
    dec = _decoder()
    for w in set(words):
        if dec.lookup_word(w) is None:
            pron = _espeak_arpabet(w)
            if pron is None:
                raise InputError(f"cannot pronounce the transcript word '{w}'")
            log.info("transcript word %r is not in the dictionary; espeak-ng says %s", w, pron)
            dec.add_word(w, pron, True)
    pcm = (np.clip(np.asarray(wav, np.float32), -1, 1) * 32767).astype("<i2").tobytes()
    try:  # 1. words, constrained to the transcript
        dec.set_align_text(" ".join(words))
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
        word_segs = [(seg.word, seg.start_frame, seg.end_frame + 1) for seg in dec.seg()]
    except (RuntimeError, ValueError) as e:
        raise InputError(f"could not align the transcript to the audio: {e}") from e
    if not any(w not in ("<s>", "</s>", "<sil>") for w, _, _ in word_segs):
        raise InputError("could not align the transcript to the audio (does it say what the transcript says?)")
    try:  # 2. phones inside those words
        dec.set_alignment()
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
        entries = [(ph.name, ph.start, ph.start + ph.duration) for word in dec.get_alignment() for ph in word]
    except (RuntimeError, ValueError, TypeError) as e:
        # the phone pass sometimes finds no path; the word pass did: share each word's time among its phones
        log.warning("phone-level alignment failed (%s); phones spread evenly inside the aligned words", e)
        entries = []
        for w, s, e_ in word_segs:
            pron = (dec.lookup_word(w.split("(")[0]) or "SIL").split() if not w.startswith("<") else ["SIL"]
            step = (e_ - s) / len(pron)
            entries += [(ph, s + k * step, s + (k + 1) * step) for k, ph in enumerate(pron)]
    phones: list[Phone] = []
    for name, f0, f1 in entries:
        sym = ARPABET_TO_IPA.get(name.split("_")[0], SILENCE)
        start, end = f0 * FRAME_S, f1 * FRAME_S
        if phones and sym == SILENCE and phones[-1].symbol == SILENCE:
            phones[-1] = Phone(SILENCE, phones[-1].start, end)
        else:
            phones.append(Phone(sym, start, end))
    if not any(p.symbol != SILENCE for p in phones):
        raise InputError("could not align the transcript to the audio: no phones were found")
    return phones


@functools.lru_cache(maxsize=1)
def _phone_decoder():
    from pocketsphinx import Decoder, get_model_path

    # phone-loop decoding with the phonetic language model that ships in the wheel (as Rhubarb Lip Sync does)
    return Decoder(samprate=SAMPLE_RATE, lm=None, allphone=get_model_path("en-us/en-us-phone.lm.bin"),
                   loglevel="FATAL", backtrace=False, beam=1e-20, pbeam=1e-20, lw=2.0)


def recognize(wav: np.ndarray) -> list[Phone]:
    """Speech (n,) float32 16 kHz -> phones recognized without a transcript (English phone set; noisy:
    phone recognition gets many phones wrong, but closures and vowels are mostly where the audio has them)."""
    dec = _phone_decoder()
    pcm = (np.clip(np.asarray(wav, np.float32), -1, 1) * 32767).astype("<i2").tobytes()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    phones: list[Phone] = []
    for seg in dec.seg():
        sym = ARPABET_TO_IPA.get(seg.word, SILENCE)
        start, end = seg.start_frame * FRAME_S, (seg.end_frame + 1) * FRAME_S
        if phones and sym == SILENCE and phones[-1].symbol == SILENCE:
            phones[-1] = Phone(SILENCE, phones[-1].start, end)
        else:
            phones.append(Phone(sym, start, end))
    return phones
