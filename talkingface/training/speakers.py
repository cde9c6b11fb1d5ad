"""Who speaks in which clip of ../shared/data/videos, so that splits never share a speaker.

Hand-checked from CATALOG.tsv's speaker notes: repeats (four Obama clips, two Ocasio-Cortez clips, two
Andrew Ng, three Fei-Fei Li, and the GRID speaker s2 in two clips) get one id. Clips not listed here are
their own speaker, unless a ``speakers.tsv`` (file<TAB>speaker) lies beside them.
"""
from __future__ import annotations

import csv
import os

KNOWN_SPEAKERS = {
    "FuxiVirtualHuman__styletalk__KristiNoem": "kristi_noem",
    "FuxiVirtualHuman__styletalk__Obama_clip1": "obama",
    "FuxiVirtualHuman__styletalk__Obama_clip2": "obama",
    "FuxiVirtualHuman__styletalk__Obama_clip3": "obama",
    "tanshuai0219__EDTalk__uncrop_Obama": "obama",
    "FuxiVirtualHuman__styletalk__andrew_clip_1": "andrew_ng",
    "FuxiVirtualHuman__styletalk__andrew_clip_2": "andrew_ng",
    "FuxiVirtualHuman__styletalk__feifeili_clip1": "feifei_li",
    "FuxiVirtualHuman__styletalk__feifeili_clip2_short": "feifei_li",
    "FuxiVirtualHuman__styletalk__feifeili_clip3": "feifei_li",
    "FuxiVirtualHuman__styletalk__reagan_clip1": "reagan",
    "KwaiVGI__LivePortrait__d11": "child_d11",
    "KwaiVGI__LivePortrait__d20": "man_d20",
    "OpenTalker__SadTalker__WDA_AlexandriaOcasioCortez_000": "aoc",
    "tencent-ailab__V-Express__short_case_AOC_gt": "aoc",
    "OpenTalker__SadTalker__WDA_KatieHill_000": "katie_hill",
    "OpenTalker__video-retalking__face_1": "retalking_man1",
    "OpenTalker__video-retalking__face_2": "eric_swalwell",
    "OpenTalker__video-retalking__face_4": "retalking_woman4",
    "ajay-sainy__Wav2Lip-GFPGAN__kim_7s_raw": "kim_presenter",
    "kleinlee__MiniMates__driving": "li_bingbing",
    "rizkiarm__LipNet__GRID_brbk7n": "grid_woman_a",
    "rizkiarm__LipNet__GRID_id2_vcd_swwp2s": "grid_s2",
    "rizkiarm__LipNet__GRID_pwij3p": "grid_s2",
    "rizkiarm__LipNet__GRID_lbbc2a": "grid_woman_b",
    "rizkiarm__LipNet__GRID_lrwp9a": "grid_woman_c",
    "rizkiarm__LipNet__GRID_lwbsza": "grid_woman_d",
    "rizkiarm__LipNet__GRID_sbwe5n": "grid_man_e",
    "tanshuai0219__EDTalk__mouth_source": "amy_klobuchar",
    "tanshuai0219__EDTalk__pose_source2": "ted_lieu",
    "tencent-ailab__V-Express__RD_Radio10_0_clip_0": "hdtf_radio10",
    "yerfor__Real3DPortrait__May_5s": "theresa_may",
}

# Speaker-disjoint validation split: never trained on, never tuned on. Chosen before any training for a
# mix of clean-sync clips (two GRID speakers, video-retalking face_1) and harder real-world ones.
VALIDATION_SPEAKERS = ("grid_woman_d", "grid_man_e", "retalking_man1", "feifei_li", "katie_hill", "theresa_may")

# Words in a file name that point at a validation speaker (or a validation clip's own audio): recordings whose
# names contain one are never used for training, not even as unlabelled audio.
VALIDATION_NAME_HINTS = ("grid_lwbsza", "grid_sbwe5n", "retalking__face_1", "feifei", "katiehill", "katie_hill",
                         "may_5s", "theresa")


def names_validation_speaker(stem: str) -> bool:
    s = stem.lower()
    return any(h in s for h in VALIDATION_NAME_HINTS) or s in VALIDATION_SPEAKERS


def speaker_of(stem: str, folder: str | None = None) -> str:
    if folder:
        table = os.path.join(folder, "speakers.tsv")
        if os.path.exists(table):
            with open(table, newline="") as f:
                for row in csv.reader(f, delimiter="\t"):
                    if len(row) >= 2 and row[0] in (stem, stem + ".mp4"):
                        return row[1]
    return KNOWN_SPEAKERS.get(stem, stem)


def split_of(speaker: str) -> str:
    return "val" if speaker in VALIDATION_SPEAKERS else "train"
