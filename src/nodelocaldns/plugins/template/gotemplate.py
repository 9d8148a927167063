"""The subset of Go ``text/template`` that CoreDNS's *template* plugin documents and its examples use.

Supported, with Go's semantics: text with ``{{ action }}`` actions, ``{{-``/``-}}`` trimming,
``{{/* comments */}}``, field chains on the data (``.Name``, ``.Group.a``, ``.Question.Name``), the
method ``.Meta "key"``, string (``"..."``, raw) and integer literals, the functions ``index`` and
``parseInt`` (Go's ``strconv.ParseUint``) and pipelines (``.Group.b | parseInt 16 8`` hands the value
to the last argument). Everything else Go templates can do (``if``/``range``/``with``, variables,
parentheses, other functions) is refused when the Corefile is parsed, so a template that loads here
behaves here as it does in CoreDNS.

Printing follows Go's ``fmt`` defaults for the values the data holds: a missing map key prints
``<no value>``, a string slice ``[a b]``, a map ``map[k:v ...]`` with sorted keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodelocaldns.plugins.template.gofuncs import (
    _FUNCS,
    NO_VALUE,
    GoMap,
    GoStruct,
    TemplateExecError,
    _ArgError,
    _CallError,
    _go_type,
    go_print,
)

FUNCTIONS = ("index", "parseInt")
_KEYWORDS = ("if", "else", "end", "range", "with", "define", "template", "block", "break", "continue")
_CONSTANTS = ("nil", "true", "false")
_SPACE = " \t\r\n"


class TemplateSyntaxError(ValueError):
    """The template text is not valid, or uses Go template syntax outside the supported subset."""


# -- parse tree ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    path: tuple[str, ...]  # () is the dot itself

    def __str__(self) -> str:
        return "." + ".".join(self.path) if self.path else "."


@dataclass(frozen=True)
class Ident:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Literal:
    value: str | int
    text: str  # as Go's parse tree prints it

    def __str__(self) -> str:
        return self.text


Arg = Field | Ident | Literal


@dataclass(frozen=True)
class Command:
    args: tuple[Arg, ...]

    def __str__(self) -> str:
        return " ".join(str(a) for a in self.args)


@dataclass(frozen=True)
class Action:
    pipeline: tuple[Command, ...]

    def __str__(self) -> str:
        return "{{" + " | ".join(str(c) for c in self.pipeline) + "}}"


Node = str | Action


@dataclass(frozen=True)
class Template:
    name: str
    nodes: tuple[Node, ...]

    @property
    def source(self) -> str:
        """The parse tree as Go prints it (``Tree.Root.String()``): the metrics' ``template`` label."""
        return "".join(str(n) for n in self.nodes)

    def execute(self, data: Any) -> str:
        """Render with ``data`` as dot. Raises TemplateExecError."""
        out: list[str] = []
        for node in self.nodes:
            if isinstance(node, str):
                out.append(node)
            else:
                out.append(go_print(self._pipeline(node, data)))
        return "".join(out)

    def _pipeline(self, action: Action, dot: Any) -> Any:
        value: Any = NO_VALUE
        for i, cmd in enumerate(action.pipeline):
            final = () if i == 0 else (value,)
            value = self._command(action, cmd, dot, final)
        return value

    def _fail(self, action: Action, cmd: Command, message: str) -> TemplateExecError:
        return TemplateExecError(f'template: {self.name}: executing "{self.name}" at <{cmd}>: {message}')

    def _command(self, action: Action, cmd: Command, dot: Any, final: tuple[Any, ...]) -> Any:
        head, rest = cmd.args[0], cmd.args[1:]
        if isinstance(head, Ident):
            args = [self._arg(action, cmd, a, dot) for a in rest] + list(final)
            try:
                return _FUNCS[head.name](*args)
            except _CallError as exc:
                raise self._fail(action, cmd, f"error calling {head.name}: {exc}") from None
            except _ArgError as exc:
                raise self._fail(action, cmd, str(exc)) from None
        if isinstance(head, Literal):
            if rest or final:
                raise self._fail(action, cmd, f"can't give argument to non-function {head}")
            return head.value
        args = [self._arg(action, cmd, a, dot) for a in rest] + list(final)
        return self._field(action, cmd, dot, head.path, args)

    def _arg(self, action: Action, cmd: Command, arg: Arg, dot: Any) -> Any:
        if isinstance(arg, Literal):
            return arg.value
        if isinstance(arg, Field):
            return self._field(action, cmd, dot, arg.path, [])
        raise self._fail(action, cmd, f"can't use function {arg.name} as an argument; use a pipeline")

    def _field(self, action: Action, cmd: Command, dot: Any, path: tuple[str, ...], args: list[Any]) -> Any:
        value = dot
        for i, name in enumerate(path):
            last = i == len(path) - 1
            call_args = args if last else []
            if isinstance(value, GoStruct):
                if name in value.methods:
                    method = value.methods[name]
                    want = method.__code__.co_argcount
                    if len(call_args) != want:
                        raise self._fail(
                            action, cmd, f"wrong number of args for {name}: want {want} got {len(call_args)}"
                        )
                    value = method(*call_args)
                    continue
                if name in value.fields:
                    if call_args:
                        raise self._fail(
                            action, cmd, f"{name} has arguments but cannot be invoked as function"
                        )
                    value = value.fields[name]
                    continue
                raise self._fail(action, cmd, f"can't evaluate field {name} in type {value.type_name}")
            if isinstance(value, GoMap):
                if call_args:
                    raise self._fail(action, cmd, f"{name} is not a method but has arguments")
                value = value.get(name, NO_VALUE)
                continue
            if value is NO_VALUE:
                raise self._fail(action, cmd, f"nil pointer evaluating interface {{}}.{name}")
            raise self._fail(action, cmd, f"can't evaluate field {name} in type {_go_type(value)}")
        if not path and args:
            raise self._fail(action, cmd, "can't give argument to non-function .")
        return value


def parse(text: str, name: str = "template") -> Template:
    """Parse template text. Raises TemplateSyntaxError naming what is wrong."""
    nodes: list[Node] = []
    i, n = 0, len(text)
    trim_next = False
    while i < n:
        start = text.find("{{", i)
        chunk = text[i:] if start < 0 else text[i:start]
        if trim_next:
            chunk = chunk.lstrip(_SPACE)
        trim_next = False
        if start < 0:
            if chunk:
                nodes.append(chunk)
            break
        j = start + 2
        if text.startswith("- ", j) or text.startswith("-\t", j) or text.startswith("-\n", j):
            chunk = chunk.rstrip(_SPACE)
            j += 1
        if chunk:
            nodes.append(chunk)
        action, i, trim_next = _parse_action(text, j, name)
        if action is not None:
            nodes.append(action)
    return Template(name, tuple(nodes))


def _parse_action(text: str, i: int, name: str) -> tuple[Action | None, int, bool]:
    """Parse from just after ``{{`` (and a trim marker); returns the action (None for a comment), the
    index after ``}}`` and whether the next text is trimmed."""
    n = len(text)
    k = i
    while k < n and text[k] in _SPACE:
        k += 1
    if text.startswith("/*", k):
        end = text.find("*/", k + 2)
        if end < 0:
            raise TemplateSyntaxError(f"template: {name}: unclosed comment")
        k = end + 2
        trim = text.startswith(" -}}", k)
        k += 3 if trim else 0
        if not text.startswith("}}", k):
            raise TemplateSyntaxError(f"template: {name}: comment ends before closing delimiter")
        return None, k + 2, trim
    words: list[list[Arg]] = [[]]
    while True:
        while k < n and text[k] in _SPACE:
            k += 1
        if k >= n:
            raise TemplateSyntaxError(f"template: {name}: unclosed action")
        if text.startswith("}}", k) or (text.startswith("-}}", k) and text[k - 1] in _SPACE):
            trim = text[k] == "-"
            k += 3 if trim else 2
            break
        ch = text[k]
        if ch == "|":
            if not words[-1]:
                raise TemplateSyntaxError(f"template: {name}: missing command before '|'")
            words.append([])
            k += 1
            continue
        arg, k = _lex_arg(text, k, name)
        words[-1].append(arg)
    if not words[-1]:
        raise TemplateSyntaxError(f"template: {name}: missing value for command")
    commands: list[Command] = []
    for idx, args in enumerate(words):
        head = args[0]
        if idx > 0 and isinstance(head, Literal):
            raise TemplateSyntaxError(f"template: {name}: non executable command in pipeline stage {idx + 1}")
        commands.append(Command(tuple(args)))
    return Action(tuple(commands)), k, trim


def _lex_arg(text: str, k: int, name: str) -> tuple[Arg, int]:
    n = len(text)
    ch = text[k]
    if ch == '"':
        j = k + 1
        out: list[str] = []
        while j < n and text[j] != '"':
            if text[j] == "\\" and j + 1 < n:
                esc = text[j + 1]
                simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "a": "\a", "b": "\b"}
                if esc not in simple:
                    raise TemplateSyntaxError(f"template: {name}: unsupported escape \\{esc} in string")
                out.append(simple[esc])
                j += 2
                continue
            if text[j] == "\n":
                break
            out.append(text[j])
            j += 1
        if j >= n or text[j] != '"':
            raise TemplateSyntaxError(f"template: {name}: unterminated quoted string")
        value = "".join(out)
        return Literal(value, _go_quote(value)), j + 1
    if ch == "`":
        end = text.find("`", k + 1)
        if end < 0:
            raise TemplateSyntaxError(f"template: {name}: unterminated raw quoted string")
        value = text[k + 1 : end]
        return Literal(value, _go_quote(value)), end + 1
    j = k
    while j < n and text[j] not in _SPACE and text[j] != "|" and not text.startswith("}}", j):
        j += 1
    word = text[k:j]
    if word.startswith(".") and (word == "." or all(p.isidentifier() for p in word[1:].split("."))):
        return Field(tuple(word[1:].split(".")) if word != "." else ()), j
    if word[:1].isdigit() or (word[:1] in "+-" and word[1:2].isdigit()):
        return Literal(_go_int(word, name), word), j
    if word.isidentifier():
        if word in _KEYWORDS:
            raise TemplateSyntaxError(
                f"template: {name}: {{{{ {word} }}}} is not supported (only plain actions)"
            )
        if word in _CONSTANTS:
            raise TemplateSyntaxError(f"template: {name}: the constant {word} is not supported")
        if word not in FUNCTIONS:
            raise TemplateSyntaxError(
                f'template: {name}: function "{word}" not defined (supported: {", ".join(FUNCTIONS)})'
            )
        return Ident(word), j
    what = {"$": "variables", "(": "parenthesized pipelines", "'": "character constants"}.get(word[:1])
    if what:
        raise TemplateSyntaxError(f"template: {name}: {what} are not supported: {word!r}")
    raise TemplateSyntaxError(f"template: {name}: unexpected {word!r} in command")


def _go_int(word: str, name: str) -> int:
    try:
        return int(word, 0)
    except ValueError:
        raise TemplateSyntaxError(f"template: {name}: bad number syntax: {word!r} (only integers)") from None


def _go_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'
