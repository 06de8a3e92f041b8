"""A small IMAP4rev1 server over TLS on 127.0.0.1 for tests, run in a thread of the test.

It speaks the part of RFC 3501 that an IMAP client library reading a mailbox uses, with
UIDPLUS (RFC 4315) and MOVE (RFC 6851): CAPABILITY, NOOP, LOGIN, LOGOUT, LIST, CREATE,
SELECT/EXAMINE, CLOSE, UNSELECT, SEARCH, FETCH, STORE, COPY, MOVE, EXPUNGE, each also as a
UID command. Folders live in memory; a test fills them and reads back what the client did::

    server = ImapServer(cert, key, user="bounces", password="pw").start()
    uid = server.deliver("INBOX", raw_bytes)
    ...
    server.folder("INBOX").uids(), server.flags("INBOX", uid), server.commands

``cut_on["UID MOVE"] = 1`` cuts the connection when that command next arrives.
``offer_move=False`` hides MOVE (and ``offer_uidplus=False`` UIDPLUS) so a client's fallback
to COPY + ``\\Deleted`` + EXPUNGE is exercised; ``tls=False`` serves plain text on the port
a client expects TLS on.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_LITERAL = re.compile(rb"\{(\d+)(\+?)\}\r\n$")
_ATOM_END = set(b" ()")


class Bad(Exception):
    """A command the server does not understand: answered BAD."""


class No(Exception):
    """A command that cannot be carried out: answered NO, with the text given."""


@dataclass
class Message:
    uid: int
    data: bytes
    flags: set[str] = field(default_factory=set)


@dataclass
class Folder:
    name: str
    uidvalidity: int
    uidnext: int = 1
    messages: list[Message] = field(default_factory=list)

    def add(self, data: bytes, flags: set[str] | None = None) -> int:
        message = Message(self.uidnext, data, set(flags or ()))
        self.uidnext += 1
        self.messages.append(message)
        return message.uid

    def uids(self) -> list[int]:
        return [m.uid for m in self.messages]


@dataclass
class Session:
    authenticated: bool = False
    selected: Folder | None = None
    read_only: bool = False


class ImapServer:
    """Folders in memory served over TLS on a free port of 127.0.0.1."""

    def __init__(
        self,
        cert: Path | None,
        key: Path | None,
        *,
        user: str = "bounces",
        password: str = "secret",
        tls: bool = True,
        offer_move: bool = True,
        offer_uidplus: bool = True,
    ) -> None:
        self.user, self.password = user, password
        self.lock = threading.Lock()
        self.folders: dict[str, Folder] = {}
        self.create("INBOX")
        self.commands: list[str] = []  # command names as received, "UID FETCH" etc.
        # Command name → how many more times the connection is cut when it arrives, before
        # it is carried out (a server or network failing mid-session).
        self.cut_on: dict[str, int] = {}
        self.logins: list[bool] = []  # whether each LOGIN succeeded
        caps = ["IMAP4rev1", "LITERAL+"]
        caps += ["UIDPLUS"] if offer_uidplus else []
        caps += ["MOVE"] if offer_move else []
        self.capabilities = " ".join(caps)
        self.context: ssl.SSLContext | None = None
        if tls:
            assert cert is not None and key is not None
            self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.context.load_cert_chain(cert, key)
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    # --- what a test uses -------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return int(self._server.server_address[1])

    def url(self, folder: str = "INBOX", *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"imaps://{self.user}:{secret}@127.0.0.1:{self.port}/{folder}"

    def create(self, name: str) -> Folder:
        with self.lock:
            if name.upper() == "INBOX":
                name = "INBOX"
            folder = Folder(name, uidvalidity=1000 + len(self.folders))
            self.folders.setdefault(name, folder)
            return self.folders[name]

    def folder(self, name: str) -> Folder:
        with self.lock:
            return self.folders["INBOX" if name.upper() == "INBOX" else name]

    def deliver(self, folder: str, data: bytes, flags: set[str] | None = None) -> int:
        """Put a message in ``folder`` (CRLF line ends, as IMAP stores them); its UID."""
        data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
        with self.lock:
            return self.folders[folder].add(data, flags)

    def flags(self, folder: str, uid: int) -> set[str]:
        with self.lock:
            for message in self.folders[folder].messages:
                if message.uid == uid:
                    return set(message.flags)
        raise KeyError(f"no message with UID {uid} in {folder}")

    def start(self) -> ImapServer:
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                owner._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- the protocol -------------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        if self.context is not None:
            try:
                sock = self.context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused our certificate, or spoke no TLS
        reader = sock.makefile("rb")
        session = Session()
        try:
            self._send(sock, f"* OK [CAPABILITY {self.capabilities}] test IMAP ready")
            while True:
                try:
                    words = self._read_command(sock, reader)
                except Bad as exc:
                    self._send(sock, f"* BAD {exc}")
                    continue
                if words is None:
                    return
                if len(words) < 2 or not isinstance(words[0], str):
                    self._send(sock, "* BAD expected a tag and a command")
                    continue
                tag, name, args = words[0], str(words[1]).upper(), words[2:]
                uid = name == "UID"
                if uid:
                    if not args:
                        self._send(sock, f"{tag} BAD UID what?")
                        continue
                    name, args = str(args[0]).upper(), args[1:]
                full = ("UID " if uid else "") + name
                with self.lock:
                    self.commands.append(full)
                    cut = self.cut_on.get(full, 0) > 0
                    if cut:
                        self.cut_on[full] -= 1
                if cut:
                    return
                try:
                    text = self._dispatch(sock, session, name, args, uid)
                except Bad as exc:
                    self._send(sock, f"{tag} BAD {exc}")
                except No as exc:
                    self._send(sock, f"{tag} NO {exc}")
                else:
                    self._send(sock, f"{tag} OK {text}")
                    if name == "LOGOUT":
                        return
        except (OSError, ValueError):
            return
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _send(self, sock: socket.socket, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        sock.sendall(data + b"\r\n")

    def _read_command(self, sock: socket.socket, reader: Any) -> list[Any] | None:
        """One command as a list of words: atoms and strings as ``str``, literals as
        ``bytes``, parenthesised lists as ``list``; None at end of input."""
        chunks: list[bytes | tuple[bytes]] = []
        while True:
            line = reader.readline(1 << 20)
            if not line:
                return None
            match = _LITERAL.search(line)
            text = line[: match.start()] if match else line.rstrip(b"\r\n")
            if any(b < 0x20 or b == 0x7F for b in text):
                raise Bad("control characters in a command")  # e.g. a TLS hello, in clear
            chunks.append(text)
            if not match:
                break
            if int(match.group(1)) > 64 << 20:
                raise Bad("literal too large")
            if not match.group(2):
                self._send(sock, "+ go ahead")
            chunks.append((reader.read(int(match.group(1))),))
        return _parse(chunks)

    def _dispatch(
        self, sock: socket.socket, session: Session, name: str, args: list[Any], uid: bool
    ) -> str:
        if name == "CAPABILITY":
            self._send(sock, f"* CAPABILITY {self.capabilities}")
            return "CAPABILITY completed"
        if name in ("NOOP", "CHECK"):
            return f"{name} completed"
        if name == "LOGOUT":
            self._send(sock, "* BYE logging out")
            return "LOGOUT completed"
        if name == "LOGIN":
            if len(args) != 2:
                raise Bad("LOGIN takes a user name and a password")
            user, password = (_text(a) for a in args)
            ok = (user, password) == (self.user, self.password)
            with self.lock:
                self.logins.append(ok)
            if not ok:
                raise No("[AUTHENTICATIONFAILED] invalid credentials")
            session.authenticated = True
            return f"[CAPABILITY {self.capabilities}] LOGIN completed"
        if not session.authenticated:
            raise Bad(f"{name} needs LOGIN first")
        with self.lock:
            return self._authenticated(sock, session, name, args, uid)

    def _authenticated(
        self, sock: socket.socket, session: Session, name: str, args: list[Any], uid: bool
    ) -> str:
        if name in ("LIST", "LSUB"):
            if len(args) != 2:
                raise Bad("LIST takes a reference and a pattern")
            pattern = _text(args[0]) + _text(args[1])
            regex = re.escape(pattern).replace(r"\*", ".*").replace("%", "[^/]*")
            for folder in self.folders:
                if re.fullmatch(regex, folder, re.IGNORECASE if folder == "INBOX" else 0):
                    self._send(sock, f'* {name} (\\HasNoChildren) "/" {_quote(folder)}')
            return f"{name} completed"
        if name == "CREATE":
            folder = _folder_name(args)
            if folder in self.folders:
                raise No("[ALREADYEXISTS] that folder exists")
            self.folders[folder] = Folder(folder, uidvalidity=1000 + len(self.folders))
            return "CREATE completed"
        if name in ("SELECT", "EXAMINE"):
            folder = self.folders.get(_folder_name(args))
            session.selected = None
            if folder is None:
                raise No("[NONEXISTENT] no such folder")
            session.selected, session.read_only = folder, name == "EXAMINE"
            self._send(sock, f"* FLAGS ({' '.join(SYSTEM_FLAGS)})")
            self._send(sock, f"* OK [PERMANENTFLAGS ({' '.join(SYSTEM_FLAGS)})] flags")
            self._send(sock, f"* {len(folder.messages)} EXISTS")
            self._send(sock, "* 0 RECENT")
            self._send(sock, f"* OK [UIDVALIDITY {folder.uidvalidity}] UIDs valid")
            self._send(sock, f"* OK [UIDNEXT {folder.uidnext}] predicted next UID")
            mode = "READ-ONLY" if session.read_only else "READ-WRITE"
            return f"[{mode}] {name} completed"
        folder = session.selected
        if folder is None:
            raise Bad(f"{name} needs a selected folder")
        if name in ("CLOSE", "UNSELECT"):
            if name == "CLOSE" and not session.read_only:
                folder.messages = [m for m in folder.messages if "\\Deleted" not in m.flags]
            session.selected = None
            return f"{name} completed"
        if name == "SEARCH":
            found = _search(folder, args, uid)
            self._send(sock, "* SEARCH" + "".join(f" {n}" for n in found))
            return "SEARCH completed"
        if name == "FETCH":
            if len(args) < 2:
                raise Bad("FETCH takes a set and items")
            for seq, message in _select(folder, _text(args[0]), uid):
                self._fetch(sock, session, seq, message, args[1], uid)
            return "FETCH completed"
        if session.read_only:
            raise No("the folder is open read-only")
        if name == "STORE":
            self._store(sock, folder, args, uid)
            return "STORE completed"
        if name in ("COPY", "MOVE"):
            if len(args) != 2:
                raise Bad(f"{name} takes a set and a folder")
            chosen = _select(folder, _text(args[0]), uid)
            target = self.folders.get(_folder_name(args[1:]))
            if target is None:
                raise No("[TRYCREATE] no such folder")
            new = [target.add(m.data, m.flags - {"\\Deleted"}) for _, m in chosen]
            copied = (
                f"[COPYUID {target.uidvalidity} {_set([m.uid for _, m in chosen])} {_set(new)}]"
            )
            if name == "COPY":
                return f"{copied} COPY completed"
            self._send(sock, f"* OK {copied}")
            self._expunge(sock, folder, {m.uid for _, m in chosen})
            return "MOVE completed"
        if name == "EXPUNGE":
            only = {m.uid for _, m in _select(folder, _text(args[0]), True)} if uid else None
            self._expunge(sock, folder, only, deleted_only=True)
            return "EXPUNGE completed"
        raise Bad(f"unknown command {name}")

    def _fetch(
        self,
        sock: socket.socket,
        session: Session,
        seq: int,
        message: Message,
        spec: Any,
        uid: bool,
    ) -> None:
        items = [str(i).upper() for i in (spec if isinstance(spec, list) else [spec])]
        macros = {"ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"], "FAST": ["FLAGS"]}
        items = [x for i in items for x in macros.get(i, [i])]
        if uid and "UID" not in items:
            items.insert(0, "UID")
        out: list[bytes] = []
        head, _, _ = message.data.partition(b"\r\n\r\n")
        for item in items:
            if item == "UID":
                out.append(f"UID {message.uid}".encode())
            elif item == "FLAGS":
                out.append(f"FLAGS ({' '.join(sorted(message.flags))})".encode())
            elif item == "RFC822.SIZE":
                out.append(f"RFC822.SIZE {len(message.data)}".encode())
            elif item == "INTERNALDATE":
                out.append(b'INTERNALDATE "01-Dec-2026 04:00:00 +0000"')
            elif item in ("RFC822", "BODY[]", "BODY.PEEK[]", "RFC822.HEADER"):
                data = message.data if item != "RFC822.HEADER" else head + b"\r\n\r\n"
                label = item.replace(".PEEK", "")
                out.append(f"{label} {{{len(data)}}}\r\n".encode() + data)
                if "PEEK" not in item and item != "RFC822.HEADER" and not session.read_only:
                    message.flags.add("\\Seen")
            elif item in ("BODY[HEADER]", "BODY.PEEK[HEADER]"):
                data = head + b"\r\n\r\n"
                out.append(f"BODY[HEADER] {{{len(data)}}}\r\n".encode() + data)
                if "PEEK" not in item and not session.read_only:
                    message.flags.add("\\Seen")
            else:
                raise Bad(f"this test server does not fetch {item}")
        self._send(sock, f"* {seq} FETCH (".encode() + b" ".join(out) + b")")

    def _store(self, sock: socket.socket, folder: Folder, args: list[Any], uid: bool) -> None:
        if len(args) != 3:
            raise Bad("STORE takes a set, an action and flags")
        action = _text(args[1]).upper()
        silent = action.endswith(".SILENT")
        action = action.removesuffix(".SILENT")
        given = args[2] if isinstance(args[2], list) else [args[2]]
        flags = {_flag(_text(f)) for f in given}
        for seq, message in _select(folder, _text(args[0]), uid):
            if action == "+FLAGS":
                message.flags |= flags
            elif action == "-FLAGS":
                message.flags -= flags
            elif action == "FLAGS":
                message.flags = set(flags)
            else:
                raise Bad(f"unknown STORE action {action}")
            if not silent:
                shown = " ".join(sorted(message.flags))
                uid_part = f"UID {message.uid} " if uid else ""
                self._send(sock, f"* {seq} FETCH ({uid_part}FLAGS ({shown}))")

    def _expunge(
        self,
        sock: socket.socket,
        folder: Folder,
        only: set[int] | None,
        *,
        deleted_only: bool = False,
    ) -> None:
        gone = [
            seq
            for seq, m in enumerate(folder.messages, start=1)
            if (only is None or m.uid in only) and (not deleted_only or "\\Deleted" in m.flags)
        ]
        for seq in reversed(gone):  # highest first: the numbers below stay valid
            del folder.messages[seq - 1]
            self._send(sock, f"* {seq} EXPUNGE")


def _parse(chunks: list[bytes | tuple[bytes]]) -> list[Any]:
    """Words of a command: atoms and quoted strings (str), literals (bytes), lists."""
    stack: list[list[Any]] = [[]]
    for chunk in chunks:
        if isinstance(chunk, tuple):
            stack[-1].append(chunk[0])
            continue
        i = 0
        while i < len(chunk):
            c = chunk[i]
            if c == 0x20:
                i += 1
            elif c == 0x28:  # (
                stack.append([])
                i += 1
            elif c == 0x29:  # )
                if len(stack) == 1:
                    raise Bad("unbalanced parenthesis")
                done = stack.pop()
                stack[-1].append(done)
                i += 1
            elif c == 0x22:  # "
                j, out = i + 1, bytearray()
                while j < len(chunk) and chunk[j] != 0x22:
                    if chunk[j] == 0x5C and j + 1 < len(chunk):
                        j += 1
                    out.append(chunk[j])
                    j += 1
                if j >= len(chunk):
                    raise Bad("unterminated quoted string")
                stack[-1].append(out.decode("utf-8", "replace"))
                i = j + 1
            else:
                j, depth = i, 0
                while j < len(chunk) and (depth > 0 or chunk[j] not in _ATOM_END):
                    depth += {0x5B: 1, 0x5D: -1}.get(chunk[j], 0)  # [ … ] may hold spaces
                    j += 1
                stack[-1].append(chunk[i:j].decode("utf-8", "replace"))
                i = j
    if len(stack) != 1:
        raise Bad("unbalanced parenthesis")
    return stack[0]


def _text(word: Any) -> str:
    if isinstance(word, bytes):
        return word.decode("utf-8", "replace")
    if isinstance(word, list):
        raise Bad("expected a word, not a list")
    return str(word)


def _flag(word: str) -> str:
    for known in SYSTEM_FLAGS:
        if word.lower() == known.lower():
            return known
    return word


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _folder_name(args: list[Any]) -> str:
    if len(args) != 1:
        raise Bad("expected one folder name")
    name = _text(args[0])
    return "INBOX" if name.upper() == "INBOX" else name


def _set(numbers: list[int]) -> str:
    return ",".join(str(n) for n in numbers)


def _in_set(spec: str, number: int, largest: int) -> bool:
    for part in spec.split(","):
        low, _, high = part.partition(":")
        try:
            a = largest if low == "*" else int(low)
            b = a if not high else (largest if high == "*" else int(high))
        except ValueError:
            raise Bad(f"not a sequence set: {spec}") from None
        if min(a, b) <= number <= max(a, b):
            return True
    return False


def _select(folder: Folder, spec: str, uid: bool) -> list[tuple[int, Message]]:
    """(sequence number, message) of each message the set names (UIDs when ``uid``)."""
    numbered = list(enumerate(folder.messages, start=1))
    if not numbered:
        return []
    largest = numbered[-1][1].uid if uid else len(numbered)
    return [(s, m) for s, m in numbered if _in_set(spec, m.uid if uid else s, largest)]


def _search(folder: Folder, args: list[Any], uid: bool) -> list[int]:
    words = [_text(a).upper() if not isinstance(a, list) else a for a in args]
    if len(words) >= 2 and words[0] == "CHARSET":
        words = words[2:]
    return [
        message.uid if uid else seq
        for seq, message in enumerate(folder.messages, start=1)
        if _matches(iter(words), folder, seq, message)
    ]


def _matches(words: Iterator[Any], folder: Folder, seq: int, message: Message) -> bool:
    """Every key of ``words`` holds for ``message`` (SEARCH's implicit AND)."""
    return all([_key(word, words, folder, seq, message) for word in words])


_FLAG_KEYS = {
    "SEEN": ("\\Seen", True),
    "UNSEEN": ("\\Seen", False),
    "DELETED": ("\\Deleted", True),
    "UNDELETED": ("\\Deleted", False),
    "ANSWERED": ("\\Answered", True),
    "UNANSWERED": ("\\Answered", False),
    "FLAGGED": ("\\Flagged", True),
    "UNFLAGGED": ("\\Flagged", False),
}


def _key(word: Any, rest: Iterator[Any], folder: Folder, seq: int, message: Message) -> bool:
    if isinstance(word, list):  # ( … ): all of the keys inside
        return _matches(iter(word), folder, seq, message)
    if word == "ALL":
        return True
    if word in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[word]
        return (flag in message.flags) == present
    if word == "NOT":
        return not _key(next(rest), rest, folder, seq, message)
    if word == "UID":
        return _in_set(_text(next(rest)), message.uid, folder.messages[-1].uid)
    if re.fullmatch(r"[\d*:,]+", word):
        return _in_set(word, seq, len(folder.messages))
    raise Bad(f"this test server does not search by {word}")
