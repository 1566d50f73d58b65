"""The standard on-disk layouts of video data sets, read into one index: class names and, per split, the
(video path, label) pairs. Chosen with `--dataset FORMAT:ROOT`.

    folder:ROOT    ROOT/train/<class>/<video>, ROOT/val/<class>/<video>; classes sorted by name
    list:ROOT      ROOT/train.csv, ROOT/val.csv with lines `path label` (PySlowFast, MMAction2)
    kinetics:ROOT  ROOT/annotations/{train,val|validate}.csv, videos ROOT/{train,val}/<id>_<start:06d>_<end:06d>.mp4
    ssv2:ROOT      something-something-v2-{labels,train,validation}.json, videos ROOT/20bn-something-something-v2/
    ucf101:ROOT    ROOT/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt, videos ROOT/UCF-101/<Class>/
    hmdb51:ROOT    <class>_test_splitN.txt (1 train, 2 test), videos ROOT/<class>/<file>.avi

A missing ROOT, split file or labels file, or a malformed line in one, is one error naming the file and line.
Listed videos that do not exist are kept in the index (the loader skips and counts them), so a partial download
still trains. Every listed path must stay inside ROOT: absolute paths and `..` that climbs out of it are refused
(the check is on the path as written, so symbolic links that the data's owner placed inside ROOT are followed).
"""

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from vtbench.errors import ConfigError

SPLITS = ("train", "val")
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv")


@dataclass
class Index:
    classes: list[str]
    videos: dict[str, list[tuple[Path, int]]]  # split -> [(path, label)]


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    return path


def _inside(root: Path, relative: str, where: str) -> Path:
    """ROOT / relative, refusing a path that is absolute or climbs out of ROOT (`where`: file and line)."""
    normal = os.path.normpath(relative)
    if not relative or os.path.isabs(relative) or normal == ".." or normal.startswith(".." + os.sep):
        raise ConfigError(f"{where}: path {relative!r} must lie inside the data set root {root} "
                          "(relative, without climbing out of it with '..')")
    return root / relative


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from None


def _malformed(where: str, expected: str, got: object) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {str(got)[:80]!r}")


def folder(root: Path, split: int = 1) -> Index:
    train_dir = _need(root / "train", "the folder layout's training folder")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise ConfigError(f"{train_dir} has no class folders (expected {train_dir}/<class>/<video>)")
    videos = {}
    for name in SPLITS:
        split_dir = _need(root / name, f"the folder layout's {name} folder")
        unknown = sorted({p.name for p in split_dir.iterdir() if p.is_dir()} - set(classes))
        if unknown:
            raise ConfigError(f"{split_dir} has classes that {train_dir} lacks: {', '.join(unknown[:5])}")
        videos[name] = [(p, label) for label, c in enumerate(classes) for p in sorted((split_dir / c).glob("*"))
                        if p.suffix.lower() in VIDEO_SUFFIXES]
    return Index(classes, videos)


def path_list(root: Path, split: int = 1) -> Index:
    videos, labels = {}, set()
    for name in SPLITS:
        listing = _need(root / f"{name}.csv", f"the list layout's {name} file")
        rows = []
        for number, line in enumerate(_text(listing).splitlines(), 1):
            if not line.strip():
                continue
            parts = line.replace(",", " ").split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
                raise ConfigError(f"{listing}:{number}: expected `path label` with a label >= 0, got {line!r}")
            rows.append((_inside(root, parts[0], f"{listing}:{number}"), int(parts[1])))
            labels.add(int(parts[1]))
        videos[name] = rows
    return Index([str(k) for k in range(max(labels) + 1)] if labels else [], videos)


def kinetics(root: Path, split: int = 1) -> Index:
    annotations = _need(root / "annotations", "the kinetics annotations folder")
    files = {"train": annotations / "train.csv",
             "val": next((annotations / f for f in ("val.csv", "validate.csv") if (annotations / f).exists()),
                         annotations / "val.csv")}
    rows = {}
    for name, path in files.items():
        text = _text(_need(path, f"the kinetics {name} annotations (or validate.csv)"))
        reader = csv.DictReader(io.StringIO(text, newline=""))
        needed = {"label", "youtube_id", "time_start", "time_end"}
        if not needed <= set(reader.fieldnames or []):
            raise ConfigError(f"{path}: header must hold label,youtube_id,time_start,time_end,split; "
                              f"got {reader.fieldnames}")
        rows[name] = [(reader.line_num, r) for r in reader]
    classes = sorted({r["label"] for _, r in rows["train"] if r["label"] is not None})
    label_of = {c: k for k, c in enumerate(classes)}
    videos = {}
    for name in SPLITS:
        videos[name] = []
        for line, r in rows[name]:
            where = f"{files[name]}:{line}"
            if None in r.values():
                raise _malformed(where, "label,youtube_id,time_start,time_end,split", ",".join(
                    str(v) for v in r.values() if v is not None))
            if r["label"] not in label_of:
                raise ConfigError(f"{where}: class {r['label']!r} is not in the training annotations")
            try:
                start, end = (int(float(r[key])) for key in ("time_start", "time_end"))
            except (ValueError, OverflowError):
                raise _malformed(where, "whole seconds in time_start and time_end",
                                 f"{r['time_start']},{r['time_end']}") from None
            file = _inside(root / name, f"{r['youtube_id']}_{start:06d}_{end:06d}.mp4", where)
            videos[name].append((file, label_of[r["label"]]))
    return Index(classes, videos)


def ssv2(root: Path, split: int = 1) -> Index:
    def load(suffix: str):
        path = _need(root / f"something-something-v2-{suffix}.json", f"the ssv2 {suffix} file")
        try:
            return json.loads(_text(path)), path
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON: {err}") from None

    labels, labels_path = load("labels")
    if not isinstance(labels, dict):
        raise _malformed(labels_path, "an object mapping each template to its class number", labels)
    try:
        label_of = {str(template): int(k) for template, k in labels.items()}
    except (TypeError, ValueError):
        raise _malformed(labels_path, "class numbers as values", list(labels.values())[:3]) from None
    classes = [t for t, _ in sorted(label_of.items(), key=lambda item: item[1])]
    folder_ = root / "20bn-something-something-v2"
    videos = {}
    for name, suffix in (("train", "train"), ("val", "validation")):
        entries, path = load(suffix)
        if not isinstance(entries, list):
            raise _malformed(path, "a list of videos", entries)
        videos[name] = []
        for number, entry in enumerate(entries):
            where = f"{path}: video {number}"
            if not isinstance(entry, dict) or not isinstance(entry.get("template"), str) or "id" not in entry:
                raise _malformed(where, 'an object with "id" and "template"', entry)
            template = entry["template"].replace("[", "").replace("]", "")
            if template not in label_of:
                raise ConfigError(f"{where} ({entry['id']}): template {template!r} is not in {labels_path}")
            videos[name].append((_inside(folder_, f"{entry['id']}.webm", where), label_of[template]))
    return Index(classes, videos)


def ucf101(root: Path, split: int = 1) -> Index:
    lists = _need(root / "ucfTrainTestlist", "the ucf101 split folder")
    class_ind = _need(lists / "classInd.txt", "the ucf101 class index")
    classes = []
    for number, line in enumerate(_text(class_ind).splitlines(), 1):
        if line.strip():
            if len(line.split()) != 2:
                raise _malformed(f"{class_ind}:{number}", "`number ClassName`", line)
            classes.append(line.split()[1])
    label_of = {c: k for k, c in enumerate(classes)}
    videos = {}
    for name, prefix in (("train", "trainlist"), ("val", "testlist")):
        listing = _need(lists / f"{prefix}{split:02d}.txt", f"the ucf101 {name} list of split {split}")
        videos[name] = []
        for number, line in enumerate(_text(listing).splitlines(), 1):
            if line.strip():
                relative = line.split()[0]
                file = _inside(root / "UCF-101", relative, f"{listing}:{number}")
                cls = relative.split("/")[0]
                if cls not in label_of:
                    raise ConfigError(f"{listing}:{number}: class {cls!r} is not in {class_ind}")
                videos[name].append((file, label_of[cls]))
    return Index(classes, videos)


def hmdb51(root: Path, split: int = 1) -> Index:
    _need(root, "the hmdb51 root")
    pattern = re.compile(rf"^(.+)_test_split{split}\.txt$")
    split_files = sorted(p for p in root.rglob(f"*_test_split{split}.txt") if pattern.match(p.name))
    if not split_files:
        raise ConfigError(f"no hmdb51 split files <class>_test_split{split}.txt under {root}")
    classes = sorted(pattern.match(p.name).group(1) for p in split_files)
    label_of = {c: k for k, c in enumerate(classes)}
    videos = {"train": [], "val": []}
    for path in split_files:
        cls = pattern.match(path.name).group(1)
        for number, line in enumerate(_text(path).splitlines(), 1):
            parts = line.split()
            if len(parts) == 2 and parts[1] in ("1", "2"):
                file = _inside(root / cls, parts[0], f"{path}:{number}")
                videos["train" if parts[1] == "1" else "val"].append((file, label_of[cls]))
    return Index(classes, videos)


# layouts whose classes do not depend on left and right, the only ones flipped in training by default: in a data set
# of unknown classes a flip can turn one class into another (a camera panning left, flipped, pans right)
MIRROR_FREE = ("kinetics", "ucf101", "hmdb51")
LAYOUTS = {"folder": folder, "list": path_list, "kinetics": kinetics, "ssv2": ssv2, "ucf101": ucf101,
           "hmdb51": hmdb51}


def read_index(layout: str, root: str | Path, split: int = 1) -> Index:
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown dataset format {layout!r}; known: synthetic, "
                          + ", ".join(f"{name}:ROOT" for name in LAYOUTS))
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"dataset root {root} does not exist (from --dataset {layout}:{root})")
    if split not in (1, 2, 3):
        raise ConfigError(f"split must be 1, 2 or 3, got {split!r}")
    index = LAYOUTS[layout](root, split)
    for name in SPLITS:
        if not index.videos[name]:
            raise ConfigError(f"{layout}:{root} lists no {name} videos")
    return index
