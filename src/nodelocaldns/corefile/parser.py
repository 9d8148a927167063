"""Corefile text -> server blocks, with the semantics of coredns/caddy ``caddyfile`` (lexer.go, parse.go).

Lexing (caddy ``lexer.next``): tokens are separated by whitespace. A token that *starts* with ``"`` runs to
the next unescaped ``"`` and may span lines; inside it only ``\\"`` is an escape, every other backslash is
kept as written. Outside quotes a ``#`` starts a comment to the end of the line, even in the middle of a
word (``foo#bar`` is the token ``foo``), as in caddy. ``\\r`` is dropped and a leading BOM is ignored.

Parsing builds a tree where caddy keeps a flat token list per directive; what the plugins see is the same:

* a server block is keys, then ``{ ... }``. Keys end at the end of their line unless a key ends with ``,``;
  the ``{`` may be on the next line. A file whose *first* block has no ``{`` is a block-less single server:
  every following line is a directive of it (caddy's "single-server configs don't need curly braces").
* a directive is one line: name, then args. A ``{`` opens a nested block whose lines are sub-directives.
* ``import PATTERN`` splices in files (glob, relative to the importing file's directory) or a snippet
  defined earlier as ``(name) { ... }``. It works where caddy allows it: at the start of a key line and at
  the start of a directive line, at any depth.
* ``{$VAR}`` and ``{%VAR%}`` are replaced from ``env`` in keys, directive names, arguments and import
  patterns; an unset variable becomes the empty string. Braces and ``import`` are recognised on the text as
  written, so a variable cannot open a block.

Deliberate differences from caddy (none changes how a Corefile that CoreDNS accepts is read, except that a
quoted brace is no longer a brace):

* ``}`` closes the innermost open block wherever it is, so ``. { errors }`` and
  ``cache { success 9984 30 }`` parse as intended (caddy rejects the first and hands ``}`` to the plugin
  as an argument in the second); a token after a nested block's ``}`` on the same line is an error.
* A quoted ``"{"``, ``"}"`` or ``"import"`` is a plain argument.
* Substituted values are not scanned again for ``{$...}`` (caddy would loop forever on ``A={$A}``).
* These are errors with file:line where caddy drops the block, loops up to its caps or reads on: a server
  block whose keys all expand to nothing, a ``,`` with no key, a block-less block after a braced one (a
  directive outside any block), an import cycle, an unterminated quoted string.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from nodelocaldns.corefile.keys import parse_server_key
from nodelocaldns.corefile.model import Directive, ServerBlock, ServerKey
from nodelocaldns.errors import CorefileError

__all__ = ["parse_corefile", "tokenize", "Token"]

log = logging.getLogger(__name__)

# Caps against hostile or runaway input: snippet imports can double at each level and file imports can fan
# out through globs. Caddy uses 10000 snippet and 100000 file expansions; nobody needs that many.
MAX_SNIPPET_EXPANSIONS = 10_000
MAX_FILE_IMPORTS = 1_000
MAX_TOKENS = 200_000
MAX_DEPTH = 32  # nested { } levels inside a directive; CoreDNS plugins use at most 1


@dataclass(frozen=True, slots=True)
class Token:
    """One lexed word. ``newline`` is true when the token is first on its line (caddy ``isNewLine``)."""

    text: str
    file: str
    line: int
    newline: bool
    quoted: bool = False
    # Files and snippets this token was imported through; used to detect import cycles.
    origin: tuple[str, ...] = ()

    def is_bare(self, text: str) -> bool:
        """True for the structural words ``{``, ``}``, ``import`` written without quotes."""
        return not self.quoted and self.text == text


def _is_space(ch: str) -> bool:
    # Go unicode.IsSpace; Python also counts the ASCII separators 0x1c-0x1f, Go does not.
    return ch.isspace() and not "\x1c" <= ch <= "\x1f"


def tokenize(text: str, filename: str = "Corefile") -> list[Token]:
    """Split Corefile text into tokens (caddy ``allTokens``).

    The only lexing error is an unterminated quoted string (caddy silently takes the rest of the file).
    """
    tokens: list[Token] = []
    line = 1
    newline = True  # the next token starts a line
    i, n = 0, len(text)
    if text.startswith("\ufeff"):
        i = 1
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            newline = True
            i += 1
            continue
        if _is_space(ch):
            i += 1
            continue
        if ch == "#":
            end = text.find("\n", i)
            i = n if end == -1 else end
            continue
        start_line = line
        val: list[str] = []
        if ch == '"':
            i += 1
            while True:
                if i >= n:
                    raise CorefileError("unterminated quoted string", filename, start_line)
                ch = text[i]
                i += 1
                if ch == '"':
                    break
                if ch == "\\" and i < n:
                    ch = text[i]
                    i += 1
                    # caddy: only \" is an escape; "\x" keeps its backslash.
                    if ch != '"':
                        val.append("\\")
                line += ch == "\n"
                val.append(ch)
            tokens.append(Token("".join(val), filename, start_line, newline, quoted=True))
        else:
            while i < n:
                ch = text[i]
                if ch == "\r":
                    i += 1  # caddy drops \r without ending the word
                    continue
                if ch in "\n#" or _is_space(ch):
                    break
                val.append(ch)
                i += 1
            tokens.append(Token("".join(val), filename, start_line, newline))
        newline = False
    return tokens


_ENV_RE = re.compile(r"\{%(.*?)%\}|\{\$(.*?)\}", re.DOTALL)


def _expand(text: str, env: Mapping[str, str]) -> str:
    if "{" not in text:
        return text

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) if m.group(1) is not None else m.group(2)
        if not name:
            return m.group(0)  # "{$}" is not a reference (caddy leaves it)
        return env.get(name, "")

    return _ENV_RE.sub(sub, text)


class _Parser:
    def __init__(self, tokens: list[Token], filename: str, env: Mapping[str, str], default_port: int) -> None:
        self.toks = tokens
        self.pos = 0
        self.filename = filename
        self.env = env
        self.default_port = default_port
        self.snippets: dict[str, list[Token]] = {}
        self.snippet_expansions = 0
        self.file_imports = 0

    # --- cursor -----------------------------------------------------------------------------------
    def eof(self) -> bool:
        return self.pos >= len(self.toks)

    def cur(self) -> Token:
        return self.toks[self.pos]

    def last(self) -> Token | None:
        return self.toks[self.pos - 1] if self.pos > 0 else None

    def err(self, message: str, tok: Token | None = None, directive: str = "") -> CorefileError:
        if tok is None:
            tok = self.toks[self.pos] if not self.eof() else self.last()
        if tok is None:
            return CorefileError(message, self.filename, 0, directive)
        return CorefileError(message, tok.file, tok.line, directive)

    def value(self, tok: Token) -> str:
        return _expand(tok.text, self.env)

    # --- top level --------------------------------------------------------------------------------
    def parse_all(self) -> tuple[ServerBlock, ...]:
        blocks: list[ServerBlock] = []
        while not self.eof():
            block = self.server_block(first=not blocks)
            if block is not None:
                blocks.append(block)
        return tuple(blocks)

    def server_block(self, first: bool) -> ServerBlock | None:
        found = self.keys()
        if found is None:  # only imports that brought nothing
            return None
        keys, start = found
        if len(keys) == 1 and keys[0][0].startswith("(") and keys[0][0].endswith(")"):
            self.snippet(keys[0][0][1:-1], keys[0][1])
            return None
        braced = not self.eof() and self.cur().is_bare("{")
        if not keys:
            what = "nothing before '{'" if braced else "every key expanded to nothing"
            raise self.err(f"server block has no keys ({what})", start)
        if not braced and not first:
            # After a braced block, a line without "{" is a directive outside any block, not a new
            # block-less server (which caddy only means for a one-server file).
            raise self.err(
                f"expected '{{' after server key {keys[0][0]!r}: directive outside a server block?",
                keys[0][1],
            )
        server_keys: list[ServerKey] = []
        for text, tok in keys:
            server_keys.extend(parse_server_key(text, tok.file, tok.line, self.default_port))
        if braced:
            open_tok = self.cur()
            self.pos += 1
            directives = self.block_body(close=open_tok, depth=0)
        else:
            directives = self.block_body(close=None, depth=0)
        key_tok = keys[0][1]
        return ServerBlock(tuple(server_keys), tuple(directives), filename=key_tok.file, line=key_tok.line)

    def keys(self) -> tuple[list[tuple[str, Token]], Token] | None:
        """Read the server keys (caddy ``addresses``) and the block's first token; None if only imports
        that brought nothing were left."""
        keys: list[tuple[str, Token]] = []
        expecting = False
        first: Token | None = None
        while True:
            if self.eof():
                if expecting:
                    raise self.err("unexpected end of file after ',': expected another server key")
                return None if first is None else (keys, first)
            tok = self.cur()
            if tok.is_bare("import") and (tok.newline or first is None):
                self.do_import()
                continue
            if first is None:
                first = tok
            if tok.is_bare("{"):
                if expecting:
                    raise self.err("expected another server key after ',' but found '{'", tok)
                return keys, first
            if tok.is_bare("}"):
                raise self.err("unexpected '}': no block is open", tok)
            text = self.value(tok)
            if text.endswith(","):
                text = text[:-1]
                if text == "":
                    raise self.err("empty server key (a ',' with no key before it)", tok)
                expecting = True
            else:
                expecting = False
            if text:  # "" or an unset {$VAR} is no key at all, as in caddy
                keys.append((text, tok))
            self.pos += 1
            if not self.eof() and not expecting and self.cur().newline:
                return keys, first

    def snippet(self, name: str, tok: Token) -> None:
        if not name:
            raise self.err("empty snippet name '()'", tok)
        if name in self.snippets:
            raise self.err(f"snippet ({name}) is already defined", tok)
        if self.eof() or not self.cur().is_bare("{"):
            raise self.err(f"snippet ({name}) needs a body in '{{ }}'", tok)
        self.pos += 1
        depth = 1
        body: list[Token] = []
        while not self.eof():
            t = self.cur()
            self.pos += 1
            if t.is_bare("}"):
                depth -= 1
                if depth == 0:
                    self.snippets[name] = body
                    return
            elif t.is_bare("{"):
                depth += 1
            body.append(t)
        raise self.err(f"unexpected end of file: snippet ({name}) has no closing '}}'", tok)

    # --- blocks and directives ----------------------------------------------------------------------
    def block_body(self, close: Token | None, depth: int, owner: str = "") -> list[Directive]:
        """Directives until the ``}`` matching ``close`` (or EOF for a block-less server)."""
        out: list[Directive] = []
        while not self.eof():
            tok = self.cur()
            if tok.is_bare("}"):
                if close is None:
                    raise self.err("unexpected '}': no block is open", tok)
                self.pos += 1
                return out
            if tok.is_bare("{"):
                raise self.err("unexpected '{': expected a directive name", tok, owner)
            if tok.is_bare("import"):
                self.do_import(owner)
                continue
            out.append(self.directive(depth))
        if close is not None:
            raise self.err(
                "unexpected end of file: the '{' opened here is never closed",
                close,
                owner,
            )
        return out

    def directive(self, depth: int) -> Directive:
        name_tok = self.cur()
        name = self.value(name_tok)
        if name == "":
            raise self.err("empty directive name", name_tok)
        self.pos += 1
        args: list[str] = []
        block: list[Directive] = []
        while not self.eof() and not self.cur().newline:
            tok = self.cur()
            if tok.is_bare("}"):
                break  # closes the enclosing block; the caller consumes it
            if tok.is_bare("{"):
                if depth + 1 > MAX_DEPTH:
                    raise self.err(f"blocks nested more than {MAX_DEPTH} deep", tok, name)
                self.pos += 1
                block = self.block_body(close=tok, depth=depth + 1, owner=name)
                if not self.eof() and not self.cur().newline and not self.cur().is_bare("}"):
                    extra = self.cur()
                    raise self.err(f"unexpected {extra.text!r} after '}}' on the same line", extra, name)
                break
            args.append(self.value(tok))
            self.pos += 1
        return Directive(
            name=name, args=tuple(args), block=tuple(block), filename=name_tok.file, line=name_tok.line
        )

    # --- import ------------------------------------------------------------------------------------
    def do_import(self, directive: str = "") -> None:
        """Replace ``import ARG`` at the cursor with the imported tokens (caddy ``doImport``)."""
        imp = self.cur()
        end = self.pos + 1
        if end >= len(self.toks) or self.toks[end].newline or self.toks[end].is_bare("}"):
            raise self.err("import needs exactly one argument (a file, glob or snippet name)", imp, directive)
        arg_tok = self.toks[end]
        if (
            end + 1 < len(self.toks)
            and not self.toks[end + 1].newline
            and not self.toks[end + 1].is_bare("}")
        ):
            raise self.err("import takes only one argument (a file, glob or snippet name)", imp, directive)
        pattern = self.value(arg_tok)
        if pattern == "":
            raise self.err("import needs a non-empty file, glob or snippet name", imp, directive)

        if pattern in self.snippets:
            ref = f"({pattern})"
            if ref in imp.origin:
                raise self.err(f"import cycle: {_chain(imp.origin, ref)}", imp, directive)
            self.snippet_expansions += 1
            if self.snippet_expansions > MAX_SNIPPET_EXPANSIONS:
                raise self.err(f"more than {MAX_SNIPPET_EXPANSIONS} snippet imports", imp, directive)
            origin = (*imp.origin, ref)
            imported = [replace(t, origin=origin) for t in self.snippets[pattern]]
        else:
            imported = self.import_files(imp, pattern, directive)

        if imported:
            imported[0] = replace(imported[0], newline=True)
        after = self.toks[end + 1 :]
        if after and not after[0].newline:
            after[0] = replace(after[0], newline=True)
        self.toks[self.pos :] = imported + after
        if len(self.toks) > MAX_TOKENS:
            raise self.err(f"imports expand to more than {MAX_TOKENS} tokens", imp, directive)

    def import_files(self, imp: Token, pattern: str, directive: str) -> list[Token]:
        base = os.path.dirname(os.path.abspath(imp.file))
        full = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        # Same limits as caddy (issue caddyserver/caddy#2096: many wildcards make globbing hang).
        if full.count("*") > 1 or full.count("?") > 1 or ("[" in full and "]" in full):
            raise self.err(f"import glob may contain only one wildcard (*): {pattern}", imp, directive)
        if any(c in full for c in "*?["):
            matches = sorted(glob.glob(full, include_hidden=True))
            if not matches:
                log.warning("%s:%d: no files match import glob %s", imp.file, imp.line, pattern)
        elif os.path.lexists(full):
            matches = [full]
        else:
            # Quoted when blank at either end (`import " "`), or the reason would end in white space.
            shown = pattern if pattern and pattern.strip() == pattern else f'"{pattern}"'
            raise self.err(f"file to import not found: {shown}", imp, directive)
        tokens: list[Token] = []
        for path in matches:
            path = os.path.abspath(path)
            if path in imp.origin:
                raise self.err(f"import cycle: {_chain(imp.origin, path)}", imp, directive)
            self.file_imports += 1
            if self.file_imports > MAX_FILE_IMPORTS:
                raise self.err(f"more than {MAX_FILE_IMPORTS} file imports", imp, directive)
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except IsADirectoryError:
                raise self.err(f"could not import {path}: is a directory", imp, directive) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise self.err(f"could not import {path}: {exc}", imp, directive) from None
            origin = (*imp.origin, path)
            tokens.extend(replace(t, origin=origin) for t in tokenize(text, path))
        return tokens


def _chain(origin: tuple[str, ...], again: str) -> str:
    return " -> ".join((*origin[origin.index(again) :], again))


def parse_corefile(
    text: str,
    filename: str = "Corefile",
    env: Mapping[str, str] | None = None,
    *,
    default_port: int = 53,
) -> tuple[ServerBlock, ...]:
    """Parse Corefile ``text`` into server blocks, in file order.

    ``filename`` names the text in errors and anchors relative imports. ``env`` (default ``os.environ``)
    feeds ``{$VAR}``/``{%VAR%}``. ``default_port`` is the port of keys without one (CoreDNS ``-dns.port``).
    Raises CorefileError naming file:line (and the directive, when there is one).
    """
    root = (os.path.abspath(filename),)
    tokens = [replace(t, origin=root) for t in tokenize(text, filename)]
    parser = _Parser(tokens, filename, os.environ if env is None else env, default_port)
    return parser.parse_all()
