"""``trackmesh record compose <session folder> -o out.mp4``: one file of a recorded room session.

Works offline, from the folder alone (the node may be stopped): see docs/recording.md. A progress
bar goes to stderr on a terminal; ``--progress json`` prints one JSON line per step instead (what
the node's compose jobs read). Exit code 0 when the file is made, 1 when the recording cannot be
composed (the message says why), 2 on a bad flag.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from trackmesh.cli.parser import OneLineParser


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="trackmesh record", description="work with recordings on disk")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)
    p = sub.add_parser(
        "compose",
        help="one audio+video file of a room session: voices mixed, videos in a grid with names",
        description="Compose a recorded room session (its folder under --record-dir, e.g. "
        "trackmesh-data/recordings/default/demo/20261207T061609Z-9eb6) into one file.",
    )
    p.add_argument("path", help="the session's folder (or a room folder holding one session)")
    p.add_argument("-o", "--output", required=True, help="the file to write (.mp4: H.264+AAC, .webm: VP9+Opus)")
    p.add_argument("--width", type=int, default=1280, help="output width (default 1280)")
    p.add_argument("--height", type=int, default=720, help="output height (default 720)")
    p.add_argument("--fps", type=int, default=25, help="output frame rate (default 25)")
    p.add_argument("--preset", default="veryfast", help="libx264 preset (default veryfast)")
    p.add_argument("--crf", type=int, default=23, help="libx264 quality, lower is better (default 23)")
    p.add_argument("--threads", type=int, default=1, help="decoder/encoder threads (default 1: one core)")
    p.add_argument("--no-names", action="store_true", help="do not draw the peers' names")
    p.add_argument("--progress", choices=("bar", "json", "none"), default=None,
                   help="bar (default on a terminal), json (one line per step) or none")  # fmt: skip
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    from trackmesh.recording.compose import ComposeError, ComposeOptions, compose

    output = Path(args.output)
    container = "webm" if output.suffix.lower() == ".webm" else "mp4"
    if output.suffix.lower() not in (".mp4", ".webm", ".m4v"):
        print(f"trackmesh record: {output}: the output must end in .mp4 or .webm", file=sys.stderr)
        return 2
    mode = args.progress or ("bar" if sys.stderr.isatty() else "none")
    began = time.monotonic()

    def progress(done: float, total: float) -> None:
        if mode == "json":
            print(json.dumps({"done": round(done, 3), "total": round(total, 3)}), flush=True)
        elif mode == "bar":
            frac = done / total if total else 1.0
            spent = time.monotonic() - began
            speed = f"{done / spent:5.2f}x" if spent > 0 else "     "
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r[{bar:<30}] {frac * 100:5.1f}%  {done:7.1f}/{total:.1f} s  {speed}")
            sys.stderr.flush()

    try:
        opts = ComposeOptions(
            width=args.width, height=args.height, fps=args.fps, container=container,
            preset=args.preset, crf=args.crf, threads=args.threads, names=not args.no_names,
        )  # fmt: skip
        result = compose(Path(args.path), output, opts, progress)
    except ComposeError as exc:
        if mode == "bar":
            sys.stderr.write("\n")
        print(f"trackmesh record: {exc}", file=sys.stderr)
        return 1
    spent = time.monotonic() - began
    if mode == "bar":
        sys.stderr.write("\n")
    summary = {**result.as_dict(), "seconds": round(spent, 2)}
    if mode == "json":
        print(json.dumps({"result": summary}), flush=True)
    else:
        print(f"{result.output}: {result.duration:.1f} s, {len(result.peers)} peers, {result.files} files, "
              f"made in {spent:.1f} s ({result.duration / spent if spent else 0:.2f}x real time)")  # fmt: skip
        for why in result.skipped:
            print(f"trackmesh record: left out {why}", file=sys.stderr)
    return 0
