"""Parse the ``rewrite`` directive (CoreDNS plugin/rewrite setup.go, rewrite.go ``newRule``, v1.14.7).

``rewrite [continue|stop] FIELD ARGS...`` or ``rewrite [continue|stop] { FIELD ARGS... }``: the block
form is the same words spread over lines (CoreDNS joins every token of the block). All ``rewrite``
directives of a server block form one rule list in file order (:func:`parse_all`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from nodelocaldns.corefile.model import Directive
from nodelocaldns.corefile.re2 import PatternError, compile_re2
from nodelocaldns.dns.names import CLASSES, RCODES, type_from_text
from nodelocaldns.plugins.rewrite import edns0 as e
from nodelocaldns.plugins.rewrite.rewriters import RegexRewriter, SuffixRewriter
from nodelocaldns.plugins.rewrite.rules import (
    CONTINUE,
    EXACT,
    PREFIX,
    REGEX,
    STOP,
    SUBSTRING,
    SUFFIX,
    ClassRule,
    CnameRule,
    NameResponse,
    NameRule,
    RcodeRule,
    ResponseRule,
    TTLRule,
    TypeRule,
    ValueResponse,
)

MATCH_KINDS = (EXACT, PREFIX, SUFFIX, SUBSTRING, REGEX)
MAX_TTL = 2147483647

Rule = NameRule | TypeRule | ClassRule | TTLRule | RcodeRule | CnameRule | e.Edns0Rule


class RuleError(ValueError):
    """A rule's words are wrong; setup attaches file:line."""


@dataclass(frozen=True, slots=True)
class RewriteConfig:
    rules: tuple[Rule, ...]


def normalize(name: str) -> str:
    """CoreDNS ``plugin.Name(n).Normalize()``: lowercased, fully qualified."""
    name = name.lower()
    return name if name.endswith(".") else name + "."


def _regex(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return compile_re2(pattern)
    except PatternError as exc:
        raise RuleError(f"invalid regex pattern in {what}: {pattern}: {exc}") from None


def _checked_regex(frm: str, to: str) -> re.Pattern[str]:
    """CoreDNS ``isValidRegexPattern``: ``to`` may use at most as many ``{N}`` as ``frm`` has groups."""
    pattern = _regex(frm, "a name rule")
    used = sum(1 for i in range(101) if "{" + str(i) + "}" in to)
    if used > pattern.groups:
        raise RuleError(
            f"the rewrite regex pattern ({to}) uses more subexpressions than its matching pattern ({frm})"
        )
    return pattern


def _answer_rules(kind: str, args: list[str]) -> tuple[bool, list[ResponseRule]]:
    """CoreDNS ``parseAnswerRules``: ``answer (auto | name FROM TO | value FROM TO)``, repeated; the
    word ``answer`` may be left out after the first."""
    if len(args) < 2:
        raise RuleError(f"invalid arguments for {kind} rule")
    auto, names, i, last = False, 0, 0, ""
    rules: list[ResponseRule] = []
    while i < len(args):
        if last == "" and args[i] != "answer":
            raise RuleError(
                f"exceeded the number of arguments for a non-answer rule argument for {kind} rule"
            )
        if args[i] == "answer":
            i += 1
        if i >= len(args):
            raise RuleError(f"type missing for answer rule for {kind} rule")
        last = args[i]
        i += 1
        if last == "auto":
            auto = True
        elif last in ("name", "value"):
            if len(args) - i < 2:
                raise RuleError(f"{last} answer rule for {kind} rule: 2 arguments required")
            rewriter = RegexRewriter(_checked_regex(args[i], args[i + 1]), normalize(args[i + 1]))
            rules.append(NameResponse(rewriter) if last == "name" else ValueResponse(rewriter))
            names += last == "name"
            i += 2
        else:
            raise RuleError(f"invalid type {last!r} for answer rule for {kind} rule")
    if auto and names:
        raise RuleError("auto name answer rule cannot be combined with explicit name answer rules")
    return auto, rules


def _name_rule(mode: str, args: list[str]) -> NameRule:
    if len(args) < 2:
        raise RuleError("too few arguments for a name rule")
    if len(args) == 2:
        kind, frm, to = EXACT, normalize(args[0]), normalize(args[1])
    else:
        kind = args[0].lower()
        frm, to = (args[1], args[2]) if kind == REGEX else (normalize(args[1]), normalize(args[2]))
    if kind not in MATCH_KINDS:
        raise RuleError(
            f"name rule supports only exact, prefix, suffix, substring, and regex name matching, received: {kind}"
        )
    auto, answers = _answer_rules(kind, args[3:]) if len(args) > 3 else (False, [])
    if kind == EXACT:
        _checked_regex(to, frm)  # CoreDNS compiles an exact rule's TO as a regex, too
        return NameRule(mode, EXACT, frm, to, auto=True, static=tuple(answers))
    if kind == SUFFIX:
        # A suffix rule reverts by swapping suffix and replacement, not by remapping the name.
        swap = SuffixRewriter(to, frm)
        static: list[ResponseRule] = [NameResponse(swap), ValueResponse(swap)] if auto else []
        static += answers
        return NameRule(mode, SUFFIX, frm, to, auto=False, static=tuple(static))
    if kind == REGEX:
        return NameRule(mode, REGEX, _checked_regex(frm, to), normalize(to), auto=auto, static=tuple(answers))
    return NameRule(mode, kind, frm, to, auto=auto, static=tuple(answers))


def _ttl_range(text: str) -> tuple[int, int]:
    parts = text.split("-")

    def num(s: str) -> int:
        if not s.isdigit() or int(s) > 0xFFFFFFFF:
            raise RuleError(f"invalid TTL '{text}' for a ttl rule")
        return int(s)

    if len(parts) == 1:
        v = num(parts[0])
        return v, v
    if len(parts) == 2 and parts != ["", ""]:
        low = num(parts[0]) if parts[0] else 0
        high = num(parts[1]) if parts[1] else MAX_TTL
        if low <= high:
            return low, high
    raise RuleError(f"invalid TTL '{text}' for a ttl rule")


def _rcode(text: str, what: str) -> int:
    if text.isdigit() and int(text) <= 23:
        return int(text)
    code = RCODES.get(text.upper())
    if code is None:
        raise RuleError(f"invalid {what} RCODE '{text}' for a rcode rule")
    return code


def _matcher(kind: str, value: str, what: str) -> tuple[str, str | re.Pattern[str]]:
    kind = kind.lower()
    if kind == REGEX:
        return kind, _regex(value, f"a {what} rule")
    if kind not in MATCH_KINDS:
        raise RuleError(
            f"{what} rule supports only exact, prefix, suffix, substring, and regex name matching"
        )
    return kind, normalize(value)


def _ttl_rule(mode: str, args: list[str]) -> TTLRule:
    if len(args) < 2:
        raise RuleError(f"too few ({len(args)}) arguments for a ttl rule")
    if len(args) > 3:
        raise RuleError("too many arguments for a ttl rule")
    low, high = _ttl_range(args[-1])
    kind, frm = _matcher(args[0], args[1], "ttl") if len(args) == 3 else (EXACT, normalize(args[0]))
    return TTLRule(mode, kind, frm, low, high)


def _rcode_rule(mode: str, args: list[str]) -> RcodeRule:
    if len(args) < 3:
        raise RuleError(f"too few ({len(args)}) arguments for a rcode rule")
    if len(args) > 4:
        raise RuleError("too many arguments for a rcode rule")
    old, new = _rcode(args[-2], "matching"), _rcode(args[-1], "replacement")
    kind, frm = _matcher(args[0], args[1], "rcode") if len(args) == 4 else (EXACT, normalize(args[0]))
    return RcodeRule(mode, kind, frm, old, new)


def _cname_rule(mode: str, args: list[str]) -> CnameRule:
    if len(args) == 3:
        kind, frm, to = args[0].lower(), args[1].lower(), args[2].lower()
        if kind not in MATCH_KINDS:
            raise RuleError(f"unknown cname rewrite type: {kind}")
    elif len(args) == 2:
        kind, frm, to = EXACT, args[0].lower(), args[1].lower()
    else:
        raise RuleError(f"too few ({len(args)}) arguments for a cname rule")
    if kind == EXACT:
        frm, to = normalize(frm), normalize(to)
    pattern = _regex(frm, "a cname rule") if kind == REGEX else None
    return CnameRule(mode, kind, frm, to, pattern)


def _go_uint(text: str, bits: int, what: str) -> int:
    """Go ``strconv.ParseUint(text, 0, bits)``: 0x/0o/0b prefixes, a leading 0 means octal."""
    t = text.replace("_", "")
    try:
        v = int(t, 8) if len(t) > 1 and t[0] == "0" and t[1].isdigit() else int(t, 0)
    except ValueError:
        raise RuleError(f"invalid {what} {text!r}") from None
    if v < 0 or v >= 1 << bits or text.startswith(("-", "+")):
        raise RuleError(f"invalid {what} {text!r}")
    return v


def _is_label(var: str) -> bool:
    """CoreDNS metadata ``IsLabel``: exactly one '/' with text on both sides."""
    inner = var[1:-1]
    return inner.count("/") == 1 and 0 < inner.index("/") < len(inner) - 1


def _edns0_rule(mode: str, args: list[str]) -> e.Edns0Rule:
    if len(args) < 2:
        raise RuleError("too few arguments for an EDNS0 rule")
    kind, action = args[0].lower(), args[1].lower()
    if action not in (e.APPEND, e.REPLACE, e.SET, e.UNSET):
        raise RuleError(f"invalid action: {action!r}")
    if action == e.UNSET:
        want = {"local": 3, "nsid": 2, "subnet": 2}.get(kind)
        if want is None:
            raise RuleError(f"invalid rule type {kind!r}")
        if len(args) != want:
            raise RuleError(f"{kind} unset action requires exactly {want - 1} argument(s)")
        if kind == "local":
            return e.Edns0LocalRule(mode, action, _go_uint(args[2], 16, "EDNS0 option code"), b"")
        return e.Edns0NsidRule(mode, action) if kind == "nsid" else e.Edns0SubnetRule(mode, action)
    revert = args[-1] == "revert"
    if revert:
        args = args[:-1]
    if kind == "local":
        if len(args) != 4:
            raise RuleError("EDNS0 local rules require three or four args")
        code, data = _go_uint(args[2], 16, "EDNS0 option code"), args[3]
        if data.startswith("{") and data.endswith("}"):
            if data not in e.VARIABLES and not _is_label(data):
                raise RuleError(f"unsupported variable name {data!r}")
            return e.Edns0VariableRule(mode, action, code, data, revert)
        raw = data.encode()
        if data.startswith("0x"):
            try:
                raw = bytes.fromhex(data[2:])
            except ValueError:
                raise RuleError(f"invalid hex data {data!r}") from None
        return e.Edns0LocalRule(mode, action, code, raw, revert)
    if kind == "nsid":
        if len(args) != 2:
            raise RuleError("EDNS0 NSID rules can accept no more than one arg")
        return e.Edns0NsidRule(mode, action, revert)
    if kind == "subnet":
        if len(args) != 4:
            raise RuleError("EDNS0 subnet rules require three or four args")
        v4, v6 = _go_uint(args[2], 16, "IPv4 bit mask length"), _go_uint(args[3], 16, "IPv6 bit mask length")
        if v4 > 32:
            raise RuleError(f"invalid IPv4 bit mask length {v4}")
        if v6 > 128:
            raise RuleError(f"invalid IPv6 bit mask length {v6}")
        return e.Edns0SubnetRule(mode, action, v4, v6, revert)
    raise RuleError(f"invalid rule type {kind!r}")


def new_rule(args: list[str]) -> Rule:
    """CoreDNS ``newRule``: one rule from its words. Raises RuleError."""
    if not args:
        raise RuleError("no rule type specified for rewrite")
    first = args[0].lower()
    mode = CONTINUE if first == CONTINUE else STOP
    if first in (CONTINUE, STOP):
        if len(args) < 2:
            raise RuleError(f"{first} rule must begin with a rule type")
        field, rest = args[1].lower(), args[2:]
    else:
        field, rest = first, args[1:]
    if field == "answer":
        raise RuleError("response rewrites must begin with a name rule")
    if field == "name":
        return _name_rule(mode, rest)
    if field in ("class", "type"):
        if len(rest) != 2:
            raise RuleError(f"{field} rules must have exactly two arguments")
        table = CLASSES if field == "class" else None
        values = []
        for word in rest:
            v = table.get(word.upper()) if table is not None else type_from_text(word.upper())
            if v is None:
                raise RuleError(f"invalid {field} {word.upper()!r}")
            values.append(v)
        return (ClassRule if field == "class" else TypeRule)(mode, values[0], values[1])
    if field == "edns0":
        return _edns0_rule(mode, rest)
    if field == "ttl":
        return _ttl_rule(mode, rest)
    if field == "cname":
        return _cname_rule(mode, rest)
    if field == "rcode":
        return _rcode_rule(mode, rest)
    raise RuleError(f"invalid rule type {args[0]!r}")


def parse(d: Directive) -> Rule:
    """One ``rewrite`` directive -> its rule, or ``d.error`` naming file:line."""
    args = list(d.args)
    if len(args) < 2:
        for sub in d.block:
            if sub.block:
                raise sub.error("a rewrite rule line does not take a block")
            args += [sub.name, *sub.args]
    elif d.block:
        raise d.error("a rewrite rule with its arguments on the directive line does not take a block")
    try:
        return new_rule(args)
    except RuleError as exc:
        raise d.error(str(exc)) from None


def parse_all(directives: Iterable[Directive]) -> RewriteConfig:
    """Every ``rewrite`` directive of a server block, in file order: one rule list."""
    return RewriteConfig(tuple(parse(d) for d in directives))
