"""Download ATIS / SNIPS in the folder format from the public Slot-Gated repository.

The files are checked against known md5 sums, so a run on fetched data is comparable to the
literature (these are the splits used by Slot-Gated, Stack-Propagation, JointBERT, ...).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from .errors import DataError
from .readers import FOLDER_FILES, read_folder_split

BASE_URL = "https://raw.githubusercontent.com/MiuLab/SlotGated-SLU/master/data"
FETCH_SPLITS = ("train", "valid", "test")
SEQ_IN_MD5 = {
    "atis": {"train": "28b26b5c417b042a89d7f5e6dd510990", "valid": "895013a95c8c09c3bb1b8878017eab90",
             "test": "4a4ff4150cacc62fce6e235bb1c53cb5"},
    "snips": {"train": "196f9a0605932031a14ddd4e48b1b70c", "valid": "2999faa56fe291e8be86ecbd5822d0e0",
              "test": "9382823d9eaa80990bad5de367bdad0f"},
}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _manual_hint(name: str, dest: Path) -> str:
    return (f"Without network access, copy the files by hand to {dest / name}/{{train,valid,test}}/"
            f"{{seq.in,seq.out,label}} (from {BASE_URL}/{name}/), then "
            f"`export SLU_DATA_DIR={dest.resolve()}` and refer to the dataset as '{name}'.")


def _complete(name: str, target: Path) -> bool:
    """True when every file is already there and each seq.in has the expected checksum."""
    return all((target / s / f).is_file() for s in FETCH_SPLITS for f in FOLDER_FILES) and all(
        _md5(target / s / "seq.in") == SEQ_IN_MD5[name][s] for s in FETCH_SPLITS)


def fetch(name: str, dest: str | os.PathLike, timeout: float = 5.0) -> Path:
    """Download benchmark ``name`` (atis or snips) into ``dest/name`` and return that folder.

    Files already present with the right checksum are kept, so re-running is cheap and works
    offline. Network failures raise DataError quickly (``timeout`` seconds per request).
    """
    if name not in SEQ_IN_MD5:
        raise DataError(f"unknown dataset {name!r}; can fetch: {', '.join(SEQ_IN_MD5)}")
    dest = Path(dest).expanduser()
    target = dest / name
    if _complete(name, target):
        return target
    for split in FETCH_SPLITS:
        for fname in FOLDER_FILES:
            url = f"{BASE_URL}/{name}/{split}/{fname}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    data = resp.read()
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise DataError(f"could not download {url}: {reason}. {_manual_hint(name, dest)}") from None
            (target / split).mkdir(parents=True, exist_ok=True)
            tmp = target / split / (fname + ".part")
            tmp.write_bytes(data)
            tmp.replace(target / split / fname)
        got = _md5(target / split / "seq.in")
        if got != SEQ_IN_MD5[name][split]:
            raise DataError(f"md5 {got} does not match the published {SEQ_IN_MD5[name][split]}; "
                            "the upstream file changed or the download was corrupted",
                            target / split / "seq.in")
        read_folder_split(target, split)  # fail now, not at training time, if the files disagree
    return target
