"""``qbank``: import a question bank and look questions up, against a running Flow.

Exit codes: 0 ok; 1 the work failed (bad rows with --strict, failed requests, server errors);
2 bad usage or input that cannot be read at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from qbank_client.api import QbankClient, QuestionHit, error_message

DEFAULT_URL = os.environ.get("QBANK_URL", "grpc://127.0.0.1:51000")


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {"subject": args.subject, "grade": args.grade, "type": args.type}


def _table(title: str, hits: list[QuestionHit]) -> str:
    lines = [
        title,
        f"  {'#':>2}  {'score':>6}  {'question':<14} {'subject':<6} {'grade':<6} {'type':<6} {'items':>5}  best item",
    ]
    for rank, hit in enumerate(hits, 1):
        shown = (hit.text or f"[{hit.modality}] {hit.best_item}").replace("\n", " ")
        lines.append(
            f"  {rank:>2}  {hit.score:>6.3f}  {hit.question_id:<14} {hit.subject:<6} {hit.grade:<6} {hit.type:<6} {len(hit.items):>5}  {shown[:50]}"
        )
    if not hits:
        lines.append("  (no matching questions)")
    return "\n".join(lines)


def _print(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, ensure_ascii=False, indent=2) if args.json else text)


def cmd_import(args: argparse.Namespace, client: QbankClient) -> int:
    from qbank_client.bank import BadRow, read_bank
    from qbank_client.importer import import_bank

    try:
        rows = list(read_bank(args.path))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bad = [str(r) for r in rows if isinstance(r, BadRow)]
    if bad and args.strict:
        for line in bad:
            print(f"bad row: {line}", file=sys.stderr)
        print(f"error: {len(bad)} bad rows and --strict: nothing imported", file=sys.stderr)
        return 1
    summary = import_bank(
        client, rows, args.batch_size, args.concurrency, args.force, progress=not args.json, total=len(rows) - len(bad)
    )
    text = (
        f"questions read: {summary.questions}  imported: {summary.imported}  items written: {summary.items_sent}  "
        f"already stored (skipped): {summary.items_skipped}  bad rows: {len(summary.bad_rows)}  failed: {len(summary.failed)}"
    )
    if not args.json:
        for line in summary.bad_rows:
            print(f"bad row (skipped): {line}", file=sys.stderr)
        for line in summary.failed:
            print(f"failed: {line}", file=sys.stderr)
    _print(args, summary.to_dict(), text)
    return 1 if summary.failed or (args.strict and summary.bad_rows) else 0


def cmd_text2image(args: argparse.Namespace, client: QbankClient) -> int:
    hits = client.text_to_image(args.query, args.limit, **_filters(args))
    _print(args, [h.to_dict() for h in hits], _table(f"questions whose figures match {args.query!r}", hits))
    return 0


def cmd_image2text(args: argparse.Namespace, client: QbankClient) -> int:
    try:
        found = client.image_to_text(args.image, args.limit, **_filters(args))
    except OSError as exc:
        print(f"error: cannot read image {args.image}: {exc}", file=sys.stderr)
        return 2
    text = (
        _table("questions whose stems match the image", found["stems"])
        + "\n\n"
        + _table("questions with the most similar figures", found["figures"])
    )
    _print(args, {k: [h.to_dict() for h in v] for k, v in found.items()}, text)
    return 0


def cmd_similar(args: argparse.Namespace, client: QbankClient) -> int:
    hits = client.similar_questions(args.query, args.limit, **_filters(args))
    _print(args, [h.to_dict() for h in hits], _table(f"questions similar to {args.query!r}", hits))
    return 0


def cmd_stats(args: argparse.Namespace, client: QbankClient) -> int:
    stats = client.stats()
    text = "\n".join(f"{k:>12}: {v}" for k, v in stats.items())
    _print(args, stats, text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qbank", description="Import a question bank and search it by text and by figure."
    )
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="gateway URL: grpc://, http:// or ws://host:port (env QBANK_URL; default %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="access token when the gateway requires one (env QBANK_AUTH_TOKEN)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("import", help="import questions from a JSONL file or a folder of *.jsonl (resumable)")
    p.add_argument("path", help="JSONL file, or folder searched for *.jsonl")
    p.add_argument("--batch-size", type=int, default=32, help="questions per request (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight (default %(default)s)")
    p.add_argument("--strict", action="store_true", help="any bad row fails the run (exit 1) before anything is sent")
    p.add_argument("--force", action="store_true", help="re-encode items even when they are already stored")
    p.set_defaults(run=cmd_import)

    def lookup(name: str, help_text: str, arg: str, arg_help: str, run) -> None:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(arg, help=arg_help)
        p.add_argument("--limit", type=int, default=10, help="questions to return (default %(default)s)")
        p.add_argument("--subject", help="only this subject")
        p.add_argument("--grade", help="only this grade")
        p.add_argument("--type", help="only this question type")
        p.set_defaults(run=run)

    lookup("text2image", "text -> questions whose figures match", "query", "text query", cmd_text2image)
    lookup(
        "image2text",
        "figure -> questions whose stems match, and similar figures",
        "image",
        "image path or http(s) URL",
        cmd_image2text,
    )
    lookup("similar", "text -> similar / near-duplicate questions", "query", "question text", cmd_similar)
    p = sub.add_parser("stats", help="questions/items stored, model, dimension, index type")
    p.set_defaults(run=cmd_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "limit", 1) < 1 or getattr(args, "batch_size", 1) < 1:
        print("error: --limit and --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        client = QbankClient(args.url, token=args.token)
        return args.run(args, client)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # server errors (ServerError): the server's description names the problem
        print(f"error: {error_message(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
