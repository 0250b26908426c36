"""``qbank``: import a question bank and look questions up, against a running Flow.

Exit codes: 0 ok; 1 the work failed (bad rows with --strict, failed requests, server errors);
2 bad usage or input that cannot be read at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from qbank.config import ClientSettings
from qbank.domain.fusion import SEARCH_MODES, parse_weights
from qbank.domain.schema import DUPLICATE_MEASURES
from qbank.quiet import quiet_known_warnings
from qbank_client.api import SCORE_KINDS, QbankClient, QuestionHit
from qbank_client.bank import KNOWN_KEYS
from qbank_client.sources import FORMATS
from qbank_client.transport import error_message

DEFAULT_URL = ClientSettings().url


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {"subject": args.subject, "grade": args.grade, "type": args.type}


SCORE_MEANINGS = dict(SCORE_KINDS.values())  # short name -> what the score is


def format_table(title: str, hits: list[QuestionHit], empty: str = "no matching questions") -> str:
    """The hits as a table whose score column says what the score is (cosine, bm25, rrf, ...), with a
    line explaining a fused score; ``empty``: what to say when there is none (why, where known)."""
    kinds = sorted({hit.score_kind for hit in hits if hit.score_kind})
    label = "/".join(kinds) if kinds else "score"
    lines = [
        title,
        f"  {'#':>2}  {label:>8}  {'question':<14} {'subject':<6} {'grade':<6} {'type':<6} {'items':>5}  best item",
    ]
    for rank, hit in enumerate(hits, 1):
        # An image's own text is what OCR read on it ("ı", "I", "O" on a drawn figure): show the figure.
        if hit.modality == "image":
            shown = f"[figure] {Path(hit.figure).name if hit.figure else hit.best_item}"
        else:
            shown = (hit.text or f"[{hit.modality}] {hit.best_item}").replace("\n", " ")
        lines.append(
            f"  {rank:>2}  {hit.score:>8.4f}  {hit.question_id:<14} {hit.subject:<6} {hit.grade:<6} {hit.type:<6} {len(hit.items):>5}  {shown[:50]}"
        )
    for kind in kinds:
        if kind in ("rrf", "weighted", "in-order", "coverage"):
            lines.append(f"  {kind}: {SCORE_MEANINGS[kind]}")
    if not hits:
        lines.append(f"  ({empty})")
    return "\n".join(lines)


def why_empty(client: QbankClient, modality: str | None = None, **filters: Any) -> str:
    """Why a search found nothing, where the bank says so: no items at all, none of that modality
    (a bank without figures), none under the filters; else "no matching questions"."""
    wanted = {k: v for k, v in filters.items() if v}
    if not client.count():
        return "the bank is empty: import questions first (qbank import)"
    if modality == "image" and not client.count(modality="image"):
        return "the bank has no figure items: import questions with figures (a figure column or HTML images) to search them"
    if wanted and not client.count(**wanted):
        return f"no item of the bank has {wanted}: check the filters (qbank stats shows the bank)"
    return "no matching questions"


def _print(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, ensure_ascii=False, indent=2) if args.json else text)


def cmd_import(args: argparse.Namespace, client: QbankClient) -> int:
    """Exit 0: every row stored or already there; 1: a row was bad, a duplicate id differed, the
    service refused a question or went away (the summary says which); 2: the bank cannot be read."""
    from qbank_client.bank import FieldMap, open_bank
    from qbank_client.importer import check_bank, import_bank
    from qbank_client.sources import BankError

    def opened():
        return open_bank(args.path, FieldMap.parse(args.map or [], args.set or []), args.encoding, args.sheet)

    try:
        bank = opened()
    except (FileNotFoundError, BankError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _tell("reading", [file.describe() for file in bank.files])
    _tell("note:", bank.notes)
    _tell(f"left out (not a bank format: {', '.join(FORMATS)}):", [str(path) for path in bank.left_out])
    if args.check or args.strict:
        summary = check_bank(bank)
        if args.check or summary.bad_rows or summary.duplicates:
            _report(args, summary)
            if not args.check:
                print("error: bad rows or duplicate ids and --strict: nothing imported", file=sys.stderr)
            return 0 if summary.complete and not (args.strict and summary.duplicates) else 1
        bank = opened()
    summary = import_bank(client, bank, args.batch_size, args.concurrency, args.force, progress=not args.json)
    _report(args, summary)
    return 0 if summary.complete else 1


def _tell(prefix: str, lines: list[str]) -> None:
    """Each line on stderr after ``prefix`` (what an import read, left out or refused)."""
    for line in lines:
        print(f"{prefix} {line}", file=sys.stderr)


def _report(args: argparse.Namespace, summary) -> None:  # noqa: ANN001 - an ImportSummary
    if not args.json:
        _tell("bad row (skipped):", summary.bad_rows)
        _tell("duplicate id:", summary.duplicates)
        _tell("failed:", summary.failed)
        if summary.stopped:
            print(
                f"stopped: {summary.stopped}. {summary.not_sent} questions read were not sent; what was "
                "acknowledged stays stored: run the same command again to resume",
                file=sys.stderr,
            )
    _print(args, summary.to_dict(), summary.line())


def cmd_text2image(args: argparse.Namespace, client: QbankClient) -> int:
    hits = client.text_to_image(args.query, args.limit, **_filters(args))
    empty = why_empty(client, "image", **_filters(args)) if not hits else ""
    _print(
        args, [h.to_dict() for h in hits], format_table(f"questions whose figures match {args.query!r}", hits, empty)
    )
    return 0


def cmd_image2text(args: argparse.Namespace, client: QbankClient) -> int:
    try:
        found = client.image_to_text(args.image, args.limit, **_filters(args))
    except OSError as exc:
        print(f"error: cannot read image {args.image}: {exc}", file=sys.stderr)
        return 2
    text = (
        format_table(
            "questions whose stems match the image",
            found["stems"],
            "" if found["stems"] else why_empty(client, "text", **_filters(args)),
        )
        + "\n\n"
        + format_table(
            "questions with the most similar figures",
            found["figures"],
            "" if found["figures"] else why_empty(client, "image", **_filters(args)),
        )
    )
    _print(args, {k: [h.to_dict() for h in v] for k, v in found.items()}, text)
    return 0


def cmd_photo(args: argparse.Namespace, client: QbankClient) -> int:
    try:
        found = client.photo_search(
            args.image, args.limit, mode=args.mode, page=args.page, figures=args.figures, **_filters(args)
        )
    except OSError as exc:
        print(f"error: cannot read image {args.image}: {exc}", file=sys.stderr)
        return 2
    heading = f"read from the photo: {found['text']!r}" if found["text"] else found["note"]
    if args.page:  # one block per question found on the page
        blocks = [
            format_table(
                f"question {segment['number'] or '(unnumbered)'} at {segment['box']}: {segment['text'][:40]!r}",
                segment["questions"],
            )
            for segment in found["segments"]
        ]
        text = f"{len(found['segments'])} questions found on the page\n"
        text += (found["note"] + "\n" if found["note"] else "") + "\n" + "\n\n".join(blocks)
    else:
        if found["focus"]:  # a hurried shot: the question it is mostly of was searched
            heading += (
                f"\nthe photo holds more than one question; searched the one at {found['focus_box']}: "
                f"{found['focus'][:40]!r} (--page searches each)"
            )
        text = heading + "\n\n" + format_table("questions matching the photo", found["questions"])
    if found["figure_matched"]:
        text += "\n\n" + format_table(
            f"questions whose figures match the figure at {found['figure_region']}", found["figures"]
        )
    elif found["figure_region"]:
        text += (
            f"\n\na figure at {found['figure_region']} was not matched against the bank's figures "
            "(the words read find the question): --figures matches it"
        )
    payload = {
        "text": found["text"],
        "focus": found["focus"],
        "focus_box": found["focus_box"],
        "note": found["note"],
        "questions": [h.to_dict() for h in found["questions"]],
        "figure_region": found["figure_region"],
        "figure_matched": found["figure_matched"],
        "figures": [h.to_dict() for h in found["figures"]],
        "segments": [dict(s, questions=[h.to_dict() for h in s["questions"]]) for s in found["segments"]],
    }
    _print(args, payload, text)
    return 0


def _weights(raw: str | None) -> tuple[float, float] | None:
    """--weights checked by the server's own rule (a ValueError: exit 2)."""
    return parse_weights(raw, "--weights") if raw else None


def cmd_similar(args: argparse.Namespace, client: QbankClient) -> int:
    mode = "bm25" if args.in_analysis and not args.mode else args.mode
    hits = client.similar_questions(
        args.query,
        args.limit,
        mode=mode,
        weights=_weights(args.weights),
        rrf_k=args.rrf_k,
        search_in="analysis" if args.in_analysis else None,
        **_filters(args),
    )
    mode = f" ({mode}{', in the analyses' if args.in_analysis else ''})" if mode else ""
    empty = why_empty(client, "text", **_filters(args)) if not hits else ""
    _print(args, [h.to_dict() for h in hits], format_table(f"questions similar to {args.query!r}{mode}", hits, empty))
    return 0


def cmd_dups(args: argparse.Namespace, client: QbankClient) -> int:
    import csv
    import io

    found = client.near_duplicates(args.by, args.threshold, args.neighbours, args.max_items, **_filters(args))
    groups = found["groups"]
    if args.format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["group", "question_id", "subject", "grade", "type", "max_similarity", "text"])
        for number, group in enumerate(groups, 1):
            for q in group["questions"]:
                row = [q["question_id"], q["subject"], q["grade"], q["type"], group["max_similarity"], q["text"]]
                writer.writerow([number, *row])
        text = out.getvalue()
    else:
        text = json.dumps(found, ensure_ascii=False, indent=2) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="") as file:
            file.write(text)
    else:
        sys.stdout.write(text)
    capped = " (capped by --max-items: narrow with filters or raise it)" if found.get("truncated") else ""
    print(
        f"{len(groups)} groups of near-duplicates ({sum(len(g['questions']) for g in groups)} questions) "
        f"by {args.by} >= {args.threshold} in {found['scanned']} stems{capped}",
        file=sys.stderr,
    )
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

    p = sub.add_parser(
        "import",
        help="import questions from a bank file (.jsonl, .json, .csv, .xlsx) or a folder (resumable)",
        description="Import a bank: rows are read, checked and sent as the file is read. Parts of a question: "
        + ", ".join(sorted(KNOWN_KEYS))
        + "; other fields are kept as metadata. Exit codes: 0 every row stored or already there; 1 a row was "
        "bad, an id was used twice with different content, or the service refused or went away (each named); "
        "2 the bank cannot be read (format, encoding, a --map column it does not have).",
    )
    p.add_argument("path", help="a .jsonl, .json (a list), .csv or .xlsx bank, or a folder searched for them")
    p.add_argument(
        "--map",
        action="append",
        metavar="PART=FIELD[,FIELD...]",
        help="which of the bank's fields hold a part of the question (repeatable; a column by name or by "
        "position, #1 the first), e.g. for CMMLU's CSV: --map stem=Question --map options=A,B,C,D --map answer=Answer",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="a value every row gets (repeatable): subject, grade, type or a metadata field such as source; "
        "{file}, {folder} and {sheet} stand for where the row comes from, e.g. --set subject={file}",
    )
    p.add_argument(
        "--encoding", help="the text encoding of CSV/JSON files (default: detected: UTF-8, GB18030, UTF-16, ...)"
    )
    p.add_argument("--sheet", help="the one sheet of an .xlsx to read (default: every sheet with a header row)")
    p.add_argument("--check", action="store_true", help="read and check the bank as an import would; send nothing")
    p.add_argument("--batch-size", type=int, default=32, help="questions per request (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight (default %(default)s)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="any bad row or duplicate id fails the run (exit 1) before anything is sent",
    )
    p.add_argument("--force", action="store_true", help="re-encode items even when they are already stored")
    p.set_defaults(run=cmd_import)

    def add_filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--subject", help="only this subject")
        p.add_argument("--grade", help="only this grade")
        p.add_argument("--type", help="only this question type")

    def lookup(name: str, help_text: str, arg: str, arg_help: str, run) -> None:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(arg, help=arg_help)
        p.add_argument("--limit", type=int, default=10, help="questions to return (default %(default)s)")
        add_filters(p)
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
    p = sub.choices["similar"]
    p.add_argument("--mode", choices=SEARCH_MODES, help="dense (CLIP), bm25 (full text) or both")
    p.add_argument("--weights", help="hybrid: 'dense,bm25' weights instead of RRF, e.g. 0.7,0.3")
    p.add_argument("--rrf-k", type=int, default=None, help="hybrid: RRF constant (server default 60)")
    p.add_argument(
        "--in-analysis",
        action="store_true",
        help="search the questions' analyses (worked solutions) by their words instead of the stems (bm25)",
    )

    lookup(
        "photo",
        "photo of a question -> its question (the text is read by OCR)",
        "image",
        "photo path or URL",
        cmd_photo,
    )
    sub.choices["photo"].add_argument("--mode", choices=("bm25", "hybrid"), help="bm25 (default) or hybrid with CLIP")
    sub.choices["photo"].add_argument(
        "--page",
        action="store_true",
        help="the photo is a whole page (an exam sheet): find each question on it and answer each on its own",
    )
    sub.choices["photo"].add_argument(
        "--figures",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="match the figure on the photo against the bank's figures (default: the server matches it "
        "when the words read are too few to find the question; --no-figures never)",
    )

    p = sub.add_parser("dups", help="groups of near-duplicate questions, as JSON or CSV (cleaning a bank)")
    p.add_argument("--by", choices=DUPLICATE_MEASURES, default="text", help="text: BM25 + bigram overlap; dense: CLIP")
    p.add_argument("--threshold", type=float, default=0.8, help="similarity in (0, 1] (default %(default)s)")
    p.add_argument("--neighbours", type=int, default=10, help="candidates per question (default %(default)s)")
    p.add_argument("--max-items", type=int, default=100_000, help="stems scanned at most (default %(default)s)")
    p.add_argument("--format", choices=["json", "csv"], default="json")
    p.add_argument("--out", help="write here instead of stdout")
    add_filters(p)
    p.set_defaults(run=cmd_dups)
    p = sub.add_parser("stats", help="questions/items stored, model, dimension, index type")
    p.set_defaults(run=cmd_stats)

    p = sub.add_parser("plan", help="size a cluster for a bank from the measured figures (no server needed)")
    p.add_argument("--questions", type=int, required=True, help="questions in the bank")
    p.add_argument(
        "--figure-share", type=float, default=0.3, help="share of questions with a figure (default %(default)s)"
    )
    p.add_argument("--qps", type=float, default=300, help="text searches a second to serve (default %(default)s)")
    p.add_argument("--recall", type=float, default=0.95, help="recall@10 the index must reach (default %(default)s)")
    p.add_argument("--node-memory-gb", type=float, default=64, help="memory of a query node (default %(default)s)")
    p.add_argument("--node-cores", type=int, default=16, help="cores of a query node (default %(default)s)")
    p.add_argument("--photo-qps", type=float, default=10, help="photo searches a second (default %(default)s)")
    p.add_argument("--import-days", type=float, default=7, help="days a first import may take (default %(default)s)")
    p.add_argument("--encoder-cores", type=int, default=4, help="cores of an encoder replica (default %(default)s)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="int8", help="the encoder's ONNX precision")
    p.add_argument("--kustomize", metavar="DIR", help="write a kustomize overlay for k8s/ with the plan into DIR")
    p.add_argument(
        "--k8s-base", default="k8s/base", help="the k8s/base folder the overlay builds on (default %(default)s)"
    )
    p.set_defaults(run=cmd_plan, offline=True)
    return parser


def cmd_plan(args: argparse.Namespace, client: QbankClient | None = None) -> int:

    from qbank.domain.sizing import format_plan, kustomization, plan

    found = plan(
        args.questions,
        args.figure_share,
        args.qps,
        args.recall,
        args.node_memory_gb,
        args.node_cores,
        args.photo_qps,
        args.import_days,
        args.encoder_cores,
        args.precision,
    )
    payload = [{"what": what, "value": value, "source": source} for what, value, source in found.lines]
    _print(args, payload, format_plan(found))
    if args.kustomize:
        folder = Path(args.kustomize)
        folder.mkdir(parents=True, exist_ok=True)
        base = os.path.relpath(Path(args.k8s_base).resolve(), folder.resolve())
        (folder / "kustomization.yaml").write_text(kustomization(found, base), encoding="utf-8")
        print(f"wrote {folder / 'kustomization.yaml'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    quiet_known_warnings()  # jina's imports print setuptools' notice on every command (QBANK_SHOW_WARNINGS)
    args = build_parser().parse_args(argv)
    if getattr(args, "limit", 1) < 1 or getattr(args, "batch_size", 1) < 1:
        print("error: --limit and --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        if getattr(args, "offline", False):  # no server involved
            return args.run(args)
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
