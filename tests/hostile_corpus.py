"""A corpus of hostile inputs: every way a watched folder can hurt a file-ingestion daemon.

Each kind writes its file(s) under a conversations root or a documents root and says what the
daemon must make of it: the outcome recorded in the state, the log event naming the file and a
piece of the reason. Some kinds strike while the file is being read (`during_read`): the tests
apply those through a hook around the pipeline's reader, the command line only writes the file.

    python tests/hostile_corpus.py DIR [--tiny-files N] [--big-mb N]

writes every kind under DIR/conversations and DIR/documents (for `ingestd import` or `run`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generators import ClaudeSession, dump, markdown_document, simple_pdf, transcript_of_size

MB = 1024 * 1024
Maker = Callable[[Path, "Options"], Path]


@dataclass(slots=True)
class Options:
    tiny_files: int = 10_000
    big_bytes: int = 100 * MB


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    root: str  # "conversations" or "documents"
    make: Maker  # writes the input under the root; returns the path the daemon is given
    status: str  # the record's status afterwards; "absent" when nothing may be recorded
    event: str  # the log event that names the file
    reason: str = ""  # a piece of the recorded / logged reason
    during_read: Callable[[Path], None] | None = None  # applied after the first line is read
    every_read: bool = False  # apply `during_read` on every read, not only the first
    notes: str = ""
    tags: frozenset[str] = field(default_factory=frozenset)


# --- writers -----------------------------------------------------------------------------------
def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _transcript_bytes(seed: int, exchanges: int) -> bytes:
    return dump(ClaudeSession(seed, f"s{seed}").lines(exchanges))


def empty(root: Path, _: Options) -> Path:
    return _write(root / "empty.md", b"")


def whitespace_only(root: Path, _: Options) -> Path:
    return _write(root / "blank.txt", b" \n\t\n\r\n   \n" * 200)


def invalid_utf8(root: Path, _: Options) -> Path:
    return _write(root / "latin1.md", "# Café crème\n\nNaïve façade déjà vu.\n".encode("latin-1") * 20)


def utf16_bom(root: Path, _: Options) -> Path:
    return _write(
        root / "utf16-bom.txt", "\ufeffUTF-16 with a BOM about the lighthouse.\n".encode("utf-16-le")
    )


def utf16_no_bom(root: Path, _: Options) -> Path:
    return _write(
        root / "utf16-le.txt", "UTF-16 without a BOM about the harbour crane.\n".encode("utf-16-le")
    )


def nul_bytes(root: Path, _: Options) -> Path:
    return _write(root / "nul.txt", b"text that looks fine\n" + b"\x00" * 64 + b"and then NULs\n")


def png_as_markdown(root: Path, _: Options) -> Path:
    return _write(root / "picture.md", b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(4000))


def sparse_zeros(root: Path, _: Options) -> Path:
    path = root / "sparse.txt"
    with path.open("wb") as handle:
        handle.truncate(1 << 30)  # 1 GiB of holes: NULs that cost no disk
    return path


def huge_single_line(root: Path, options: Options) -> Path:
    path = root / "one-line.txt"
    block = b"a" * MB
    with path.open("wb") as handle:
        for _ in range(options.big_bytes // MB):
            handle.write(block)
        handle.write(b"\n")
    return path


def cr_line_endings(root: Path, _: Options) -> Path:
    return _write(root / "classic-mac.txt", b"The tugboat pushes the barge.\rNo LF anywhere.\rEnd")


def no_final_newline_document(root: Path, _: Options) -> Path:
    return _write(root / "no-eol.md", b"# Orchard\n\nThe last paragraph mentions the apricot harvest")


def oversized_jsonl_line(root: Path, _: Options) -> Path:
    session = ClaudeSession(51, "oversized")
    lines = [*session.lines(1), session.user("x" * (9 * MB)), *session.lines(1)]
    return _write(root / "proj" / "oversized.jsonl", dump(lines))


def malformed_interleaved(root: Path, _: Options) -> Path:
    good = _transcript_bytes(52, 3).splitlines(keepends=True)
    junk = [b"{not json\n", b'{"type": "user", "message": \n', b"\xff\xfe garbage\n", b"]]]\n"]
    body = b"".join(line + junk[i % len(junk)] for i, line in enumerate(good))
    return _write(root / "proj" / "malformed.jsonl", body)


def unexpected_shape(root: Path, _: Options) -> Path:
    lines = [[1, 2, 3], "a string", 42, None, {"no": "type"}, {"type": "user", "message": [1, 2]}]
    return _write(root / "proj" / "shape.jsonl", dump(lines))


def nested_deep(root: Path, _: Options) -> Path:
    deep = b"[" * 10_000 + b"]" * 10_000 + b"\n"
    nested_obj = b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"\n"
    return _write(root / "proj" / "deep.jsonl", _transcript_bytes(53, 1) + deep + nested_obj)


def base64_image(root: Path, _: Options) -> Path:
    session = ClaudeSession(54, "image")
    lines = [*session.lines(1), session.image(5 * MB * 3 // 4), *session.lines(1)]  # ~5 MB of base64
    return _write(root / "proj" / "image.jsonl", dump(lines))


def empty_transcript(root: Path, _: Options) -> Path:
    return _write(root / "proj" / "empty.jsonl", b"")


def no_final_newline_transcript(root: Path, _: Options) -> Path:
    session = ClaudeSession(55, "partial")
    body = dump(session.lines(2)) + json.dumps(session.user("never finished")).encode()
    return _write(root / "proj" / "partial.jsonl", body)


def _big_transcript(name: str) -> Maker:
    def make(root: Path, _: Options) -> Path:
        path = root / "proj" / name
        transcript_of_size(path, seed=56, size=48 * 1024)
        return path

    return make


def truncate_to_third(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 3)


def delete_file(path: Path) -> None:
    path.unlink()


def rewrite_every_time(path: Path) -> None:
    """Different content (and head) on every read, like a file some tool keeps regenerating."""
    counter = int.from_bytes(os.urandom(4), "big")
    path.write_text(f"# Revision {counter}\n\n" + markdown_document(counter % 1000, 3))


def changing_document(root: Path, _: Options) -> Path:
    path = root / "churn.md"
    rewrite_every_time(path)
    return path


def same_size_same_mtime(root: Path, _: Options) -> Path:
    """The middle differs, head, tail, size and mtime do not: only ctime tells (the tests swap)."""
    path = root / "swapped.md"
    path.write_bytes(swap_body(0))
    return path


def swap_body(version: int) -> bytes:
    head = "# Swap\n\n" + "Intro paragraph about the ferry timetable. " * 120 + "\n\n"
    middle = ("walrus " if version == 0 else "pelican") * 400 + "\n\n"
    tail = "Closing paragraph about the harbour. " * 120 + "\n"
    return (head + middle + tail).encode()


def permission_denied(root: Path, _: Options) -> Path:
    path = _write(root / "locked.md", b"# Locked\n\nNobody may read this.\n")
    path.chmod(0)
    return path


def symlink_outside(root: Path, _: Options) -> Path:
    outside = root.parent.parent / "outside-secret.md"
    _write(outside, b"# Secret\n\nThis file lives outside the watched roots.\n")
    link = root / "escape.md"
    link.symlink_to(outside)
    return link


def symlink_loop(root: Path, _: Options) -> Path:
    a, b = root / "loop-a.md", root / "loop-b.md"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def broken_symlink(root: Path, _: Options) -> Path:
    link = root / "dangling.md"
    link.symlink_to(root / "does-not-exist.md")
    return link


def fifo(root: Path, _: Options) -> Path:
    path = root / "pipe.md"
    os.mkfifo(path)
    return path


def unix_socket(root: Path, _: Options) -> Path:
    path = root / "sock.txt"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
    finally:
        server.close()
    return path


def char_device(root: Path, _: Options) -> Path:
    path = root / "zero.txt"
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's twin: endless bytes
    except PermissionError:
        os.mkfifo(path)  # without CAP_MKNOD: a FIFO, refused the same way
    return path


def directory_like_file(root: Path, _: Options) -> Path:
    path = root / "folder.md"
    path.mkdir()
    (path / "inner.txt").write_text("A real file inside a directory named like a file.\n")
    return path


def newline_name(root: Path, _: Options) -> Path:
    return _write(root / "line\nbreak.md", b"# Newline\n\nA file name with a newline in it, about otters.\n")


def undecodable_name(root: Path, _: Options) -> Path:
    raw = os.fsencode(root) + b"/caf\xe9-\xff.md"
    with open(raw, "wb") as handle:
        handle.write(b"# Bytes\n\nA file name that is not UTF-8, about beavers.\n")
    return Path(os.fsdecode(raw))


def long_path(root: Path, _: Options) -> Path:
    """Nested 250-byte directory names: about 3,800 bytes of path, just under PATH_MAX."""
    here = root
    for index in range(14):
        here = here / (f"{index:02d}" + "d" * 248)
    here.mkdir(parents=True)
    return _write(here / ("n" * 250 + ".md"), b"# Deep\n\nA very long path about moles.\n")


def over_path_max(root: Path, _: Options) -> Path:
    """A file whose absolute path exceeds PATH_MAX (4096): made with directory fds."""
    fd = os.open(root, os.O_RDONLY)
    parts = [root]
    try:
        for index in range(18):
            name = f"{index:02d}" + "p" * 248
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
            parts.append(Path(name))
        handle = os.open("far.md", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(handle, b"# Far\n\nBeyond PATH_MAX.\n")
        os.close(handle)
    finally:
        os.close(fd)
    return Path(*parts, "far.md")


def tiny_files(root: Path, options: Options) -> Path:
    folder = root / "swarm"
    folder.mkdir()
    for index in range(options.tiny_files):
        (folder / f"n{index:05d}.txt").write_text(
            f"Tiny note {index}: gull number {index} saw a {index % 7} fish.\n"
        )
    return folder


def encrypted_pdf(root: Path, _: Options) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(simple_pdf(["Classified tide tables"]))))
    writer.encrypt("secret-password")
    out = io.BytesIO()
    writer.write(out)
    return _write(root / "encrypted.pdf", out.getvalue())


def corrupt_pdf(root: Path, _: Options) -> Path:
    good = simple_pdf(["Corrupted report"])
    return _write(root / "corrupt.pdf", good[:9] + random.Random(2).randbytes(len(good)))


def pdf_without_header(root: Path, _: Options) -> Path:
    return _write(root / "fake.pdf", b"Just text pretending to be a PDF.\n")


def html_only_script(root: Path, _: Options) -> Path:
    return _write(root / "script.html", b"<html><script>" + b"var a = 1;" * 500 + b"</script></html>")


def ansi_and_controls(root: Path, _: Options) -> Path:
    body = "# Terminal\n\n\x1b[31mred\x1b[0m text with \x07 bells and \x08 backspaces about cranes.\n"
    return _write(root / "ansi.md", body.encode())


KINDS: list[Kind] = [
    Kind("empty_file", "documents", empty, "skipped", "file.skipped", "empty file"),
    Kind("whitespace_only", "documents", whitespace_only, "skipped", "file.skipped", "empty file"),
    Kind("invalid_utf8", "documents", invalid_utf8, "skipped", "file.skipped", "not valid UTF-8"),
    Kind("utf16_with_bom", "documents", utf16_bom, "done", "file.ingested"),
    Kind("utf16_without_bom", "documents", utf16_no_bom, "done", "file.ingested"),
    Kind("nul_bytes", "documents", nul_bytes, "skipped", "file.skipped", "NUL bytes"),
    Kind("png_renamed_md", "documents", png_as_markdown, "skipped", "file.skipped", "binary file"),
    Kind("sparse_1gib_of_zeros", "documents", sparse_zeros, "skipped", "file.skipped", "NUL bytes"),
    Kind(
        "single_line_100mb",
        "documents",
        huge_single_line,
        "skipped",
        "file.skipped",
        "longer than MAX_LINE_BYTES",
        tags=frozenset({"big"}),
    ),
    Kind("cr_only_line_endings", "documents", cr_line_endings, "done", "file.ingested"),
    Kind("document_without_final_newline", "documents", no_final_newline_document, "done", "file.ingested"),
    Kind(
        "jsonl_line_over_cap", "conversations", oversized_jsonl_line, "done", "line.skipped", "MAX_LINE_BYTES"
    ),
    Kind(
        "jsonl_malformed_interleaved", "conversations", malformed_interleaved, "done", "line.skipped", "JSON"
    ),
    Kind(
        "json_unexpected_shape", "conversations", unexpected_shape, "done", "line.skipped", "unexpected JSON"
    ),
    Kind("json_nested_10000_deep", "conversations", nested_deep, "done", "line.skipped", "nested too deeply"),
    Kind("base64_image_5mb", "conversations", base64_image, "done", "file.ingested"),
    Kind("empty_transcript", "conversations", empty_transcript, "done", "file.ingested"),
    Kind(
        "transcript_last_line_without_newline",
        "conversations",
        no_final_newline_transcript,
        "done",
        "file.ingested",
        notes="the unterminated last line waits for its newline",
    ),
    Kind(
        "truncated_while_read",
        "conversations",
        _big_transcript("truncated.jsonl"),
        "done",
        "file.changed_while_reading",
        "changed while being read",
        during_read=truncate_to_third,
    ),
    Kind(
        "deleted_while_read",
        "conversations",
        _big_transcript("deleted.jsonl"),
        "failed",
        "file.failed",
        "disappeared while being read",
        during_read=delete_file,
    ),
    Kind(
        "changes_on_every_read",
        "documents",
        changing_document,
        "done",
        "file.changed_while_reading",
        "changed while being read",
        during_read=rewrite_every_time,
        every_read=True,
    ),
    Kind("replaced_same_size_and_mtime", "documents", same_size_same_mtime, "done", "file.ingested"),
    Kind("permission_denied", "documents", permission_denied, "failed", "file.failed", "permission denied"),
    Kind(
        "symlink_outside_root", "documents", symlink_outside, "skipped", "file.skipped", "outside the watched"
    ),
    Kind("symlink_loop", "documents", symlink_loop, "skipped", "file.skipped", "symlink loop"),
    Kind("broken_symlink", "documents", broken_symlink, "skipped", "file.skipped", "broken symlink"),
    Kind("fifo", "documents", fifo, "skipped", "file.skipped", "FIFO"),
    Kind("unix_socket", "documents", unix_socket, "skipped", "file.skipped", "socket"),
    Kind("character_device", "documents", char_device, "skipped", "file.skipped", "not a regular file"),
    Kind(
        "directory_named_like_file", "documents", directory_like_file, "skipped", "file.skipped", "directory"
    ),
    Kind("name_with_newline", "documents", newline_name, "done", "file.ingested"),
    Kind("name_not_utf8", "documents", undecodable_name, "done", "file.ingested"),
    Kind("very_long_path", "documents", long_path, "done", "file.ingested"),
    Kind("path_over_path_max", "documents", over_path_max, "skipped", "file.skipped", "name too long"),
    Kind(
        "ten_thousand_tiny_files",
        "documents",
        tiny_files,
        "done",
        "file.ingested",
        tags=frozenset({"big"}),
    ),
    Kind("encrypted_pdf", "documents", encrypted_pdf, "skipped", "file.skipped", "encrypted PDF"),
    Kind("corrupt_pdf", "documents", corrupt_pdf, "skipped", "file.skipped", "PDF"),
    Kind("pdf_without_header", "documents", pdf_without_header, "skipped", "file.skipped", "not a PDF"),
    Kind("html_only_script", "documents", html_only_script, "skipped", "file.skipped", "no extractable text"),
    Kind("ansi_escapes_and_controls", "documents", ansi_and_controls, "done", "file.ingested"),
]
BY_NAME = {kind.name: kind for kind in KINDS}


def build(directory: Path, options: Options | None = None, only: list[str] | None = None) -> dict[str, Path]:
    """Write every kind (or `only` these) under DIRECTORY/{conversations,documents}."""
    options = options or Options()
    out: dict[str, Path] = {}
    for kind in KINDS:
        if only is not None and kind.name not in only:
            continue
        root = directory / kind.root / kind.name
        root.mkdir(parents=True, exist_ok=True)
        out[kind.name] = kind.make(root, options)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--tiny-files", type=int, default=10_000)
    parser.add_argument("--big-mb", type=int, default=100)
    parser.add_argument("--only", nargs="*", help="kind names (default: all)")
    args = parser.parse_args(argv)
    written = build(args.directory, Options(args.tiny_files, args.big_mb * MB), args.only)
    for name, path in written.items():
        print(f"{name}\t{os.fsencode(path)!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
