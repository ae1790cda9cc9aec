"""The corpus: hostile strings (``tests/hostile/strings.json``) and their markers, and files that
hypothesis will not write by itself."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

HOSTILE_DIR = Path(__file__).resolve().parents[1] / "hostile"
REPO = HOSTILE_DIR.parents[1]
STRINGS: dict[str, list[str]] = {k: v for k, v in json.loads((HOSTILE_DIR / "strings.json").read_text()).items()
                                 if not k.startswith("_")}
ALL_STRINGS: list[str] = [s for group in STRINGS.values() for s in group]
HTML_MARKER, RICH_MARKER, FORGED_MARKER, SECRET_MARKER = "t2cinj", "t2cmk", "t2cfrg", "t2csecret"


def deep_nesting(levels: int = 100_000, *, kind: str = "yaml") -> str:
    """A document nested ``levels`` deep: ``[[[...]]]`` (JSON is YAML too) or ``{"a": {"a": ...}}``."""
    if kind == "json-object":
        return '{"a": ' * levels + "1" + "}" * levels
    return "[" * levels + "]" * levels


def encodings_of(text: str) -> dict[str, bytes]:
    """``text`` in the encodings a careless user saves, and bytes that are no text at all."""
    import random

    rng = random.Random(28)
    return {
        "utf16-bom": text.encode("utf-16"),
        "utf16-le": text.encode("utf-16-le"),
        "utf8-bom": b"\xef\xbb\xbf" + text.encode(),
        "latin1": (text + "\ncaf\xe9\n").encode("latin-1", "replace"),
        "invalid-utf8": text.encode()[: len(text) // 2] + b"\xff\xfe\xc3\x28\xa0\xa1" + text.encode()[len(text) // 2:],
        "binary": bytes(rng.randrange(256) for _ in range(4096)),
        "nul-bytes": text.encode().replace(b"\n", b"\x00\n", 3),
        "png-bytes": b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(512)),
        "empty": b"",
    }


def write_huge_file(path: Path, size: int = 50 * 2**20, head: bytes = b"monitors:\n") -> Path:
    """A sparse file of ``size`` bytes that starts with ``head`` (costs no disk)."""
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return path


def hostile_file_variants(folder: Path, stem: str, suffix: str, valid_text: str) -> dict[str, Path]:
    """A valid file of one format written every hostile way: other encodings, binary, huge, nested
    100,000 deep, and the YAML bombs of ``tests/hostile`` (for YAML formats)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in encodings_of(valid_text).items():
        out[name] = folder / f"{stem}-{name}{suffix}"
        out[name].write_bytes(data)
    out["huge"] = write_huge_file(folder / f"{stem}-huge{suffix}", head=valid_text.encode()[:200])
    out["deep"] = folder / f"{stem}-deep{suffix}"
    out["deep"].write_text(deep_nesting(kind="json-object" if suffix in (".jsonl", ".json") else "yaml"))
    if suffix in (".yaml", ".yml"):
        for bomb in sorted(HOSTILE_DIR.glob("*.yaml")):
            out[bomb.stem] = bomb
    return out


def make_special_files(folder: Path) -> dict[str, Path]:
    """Things in a folder that are not regular files: a FIFO, a unix socket, a link to a device, links
    that lead nowhere or to themselves, and (useless when root) a file nobody may read."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"fifo": folder / "fifo.png", "socket": folder / "socket.png", "device": folder / "zero.png",
           "dangling": folder / "dangling.png", "loop": folder / "loop.png", "unreadable": folder / "secret.png"}
    os.mkfifo(out["fifo"])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(out["socket"]))  # the file stays after close
    sock.close()
    out["device"].symlink_to("/dev/zero")
    out["dangling"].symlink_to(folder / "no-such-file.png")
    out["loop"].symlink_to(out["loop"])
    out["unreadable"].write_bytes(b"\x89PNG\r\n\x1a\n")
    out["unreadable"].chmod(0)
    return out


def credential_urls(server_url: str) -> list[tuple[str, str, str]]:
    """(where, URL, secret): a distinct credential in every place a database URL can hold one, on the
    real server (so the command gets far) and on one that is not there (so it fails)."""
    from sqlalchemy.engine import make_url

    url = make_url(server_url).set(drivername="postgresql")
    secret = iter(f"{SECRET_MARKER}{i:02d}x" for i in range(100))
    cases = []
    for where in ("password", "sslpassword", "apikey", "token", "access_token", "sslkey", "passfile"):
        s = next(secret)
        value = f"/tmp/{s}.key" if where in ("sslkey", "passfile") else s
        cases.append((f"query {where}", url.update_query_dict({where: value}).render_as_string(False), s))
    s = next(secret)
    cases.append(("user info password", url.set(password=s).render_as_string(False), s))
    s, t = next(secret), next(secret)
    cases.append(("unreachable host", f"postgresql://fuzz:{s}@127.0.0.1:9/db?password={s}&sslpassword={t}", s))
    s = next(secret)
    cases.append(("unparseable", f"postgresql://fuzz:{s}@[::1/db?password={s}", s))
    s = next(secret)
    cases.append(("other backend", f"mysql://fuzz:{s}@localhost/db?password={s}", s))
    s = next(secret)
    cases.append(("libpq DSN", f"host=localhost dbname=db password={s}", s))
    s = next(secret)
    cases.append(("percent-encoded", url.update_query_dict({"password": f"%{s}%40"}).render_as_string(False), s))
    return cases
