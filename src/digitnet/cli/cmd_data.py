"""``digitnet data``: see where a dataset's files are and whether they are intact; download them.

    digitnet data info [--dataset mnist|fashion-mnist] [--data-dir DIR] [--json]
    digitnet data download [--dataset NAME] [--data-dir DIR] [--force] [--no-progress]

``info`` never downloads; it exits 0 when every file is found and its checksum matches, 1 when a
file is missing or fails its checksum (so scripts can test it), and 2 for a bad flag or data dir.
"""

from __future__ import annotations

import argparse
import sys

DATASET_CHOICES = ["mnist", "fashion-mnist"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="show where the datasets are and check them; download them",
        description="Inspect and download the datasets (MNIST, Fashion-MNIST).")
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--dataset", choices=DATASET_CHOICES, default="mnist",
                         help="which dataset (default mnist)")
        sub.add_argument("--data-dir", metavar="DIR",
                         help="a folder searched first (DIR/<dataset>/ or DIR itself); downloads go to "
                              "DIR/<dataset>/ (default: $DIGITNET_DATA, then ~/.cache/digitnet)")

    info = actions.add_parser("info", help="where the files are, samples per class, checksums",
                              description="Show where the dataset's files were found, how many samples "
                              "each split and class has, and whether every file's sha256 matches the "
                              "published value. Never downloads. Exit code 1 if a file is missing or bad.")
    common(info)
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    download = actions.add_parser("download", help="download the dataset's files (verified)",
                                  description="Download the dataset's four files from the public "
                                  "mirrors, verifying each file's sha256 before keeping it. Files "
                                  "already present and intact are not downloaded again.")
    common(download)
    download.add_argument("--force", action="store_true",
                          help="replace files in --data-dir that fail their checksum")
    download.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run, data_parser=parser)


def run(args) -> int:
    if args.data_action == "info":
        return run_info(args)
    if args.data_action == "download":
        return run_download(args)
    args.data_parser.print_help(sys.stderr)
    return 2


def run_info(args) -> int:
    from digitnet.cli.common import print_json
    from digitnet.data.datasets import dataset_info

    info = dataset_info(args.dataset, data_dir=args.data_dir)
    if args.json:
        print_json(info)
    else:
        print(format_info(info))
    return 0 if info["ok"] else 1


def format_info(info: dict) -> str:
    """The human-readable form of :func:`digitnet.data.datasets.dataset_info`."""
    lines = [f"{info['title']} ({info['dataset']}): {len(info['classes'])} classes"]
    for split, entry in info["splits"].items():
        if not entry["found"]:
            lines += ["", f"{split}: NOT FOUND"]
            continue
        count = "?" if entry["count"] is None else f"{entry['count']:,}"
        lines += ["", f"{split}: {count} images in {entry['folder']} ({entry['origin']})"]
        for record in entry["files"]:
            lines.append(f"  {record['checksum']:<6} {record['path']}")
        if entry["class_counts"]:
            width = max(len(c) for c in entry["class_counts"])
            for cls, n in entry["class_counts"].items():
                lines.append(f"  {cls:>{width}}  {n:>6,}")
        if entry["error"]:
            lines.append(f"  error: {entry['error']}")
    lines += ["", "searched, in order:"]
    lines += [f"  {s['path']}  ({s['origin']}{'' if s['exists'] else ', missing'})" for s in info["searched"]]
    missing = [s for s, e in info["splits"].items() if not e["found"]]
    if info["ok"]:
        lines += ["", "checksums: all OK"]
    elif missing:
        lines += ["", f"not found: {', '.join(missing)}; run 'digitnet data download --dataset "
                      f"{info['dataset']}' (it would put the files in {info['download_target']})"]
    else:
        lines += ["", "checksums: FAILED (see above)"]
    return "\n".join(lines)


def run_download(args) -> int:
    from digitnet.data.datasets import SPLITS, download_dataset, find_split, get_spec

    spec = get_spec(args.dataset)
    if args.data_dir is None:
        # Already available somewhere we look (DIGITNET_DATA, the cache, a system folder)? Then there
        # is nothing to fetch; `data info` checks the checksums.
        found = {split: find_split(spec, split) for split in SPLITS}
        if all(found.values()):
            folders = sorted({str(f.location.path) for f in found.values() if f})
            print(f"{spec.title} is already available in {', '.join(folders)}; nothing to download "
                  "('digitnet data info' checks it)")
            return 0
    progress = False if args.no_progress else None
    folder = download_dataset(spec.name, data_dir=args.data_dir, force=args.force, progress=progress)
    print(f"{spec.title}: all files present and verified in {folder}")
    return 0
