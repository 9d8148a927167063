"""DNS mnemonics as CoreDNS (miekg/dns) spells them (zone matching: core/zones.py).

miekg's ``StringToType``/``StringToClass``/``StringToRcode`` maps are exact-case, upper-case and
have no ``TYPE123`` generic form; plugins that look words up in them (``template IN A``, ``rewrite
rcode ... SERVFAIL NOERROR``) reject anything else, so these helpers do too.
"""

from __future__ import annotations

import dns.rdatatype

# miekg ClassToString (CS is obsolete but still a key).
CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
CLASS_NAMES = {v: k for k, v in CLASSES.items()}

# miekg RcodeToString; 16 prints as BADSIG (RFC 6891 shares it with BADVERS), plus the NOTIMPL alias.
RCODE_NAMES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADSIG",
    17: "BADKEY", 18: "BADTIME", 19: "BADMODE", 20: "BADNAME", 21: "BADALG", 22: "BADTRUNC",
    23: "BADCOOKIE",
}  # fmt: skip
RCODES = {v: k for k, v in RCODE_NAMES.items()} | {"NOTIMPL": 4}


def type_from_text(text: str) -> int | None:
    """miekg ``StringToType[text]``: the type number, or None when miekg has no such key."""
    if text != text.upper() or text.startswith("TYPE"):
        return None
    try:
        return int(dns.rdatatype.from_text(text))
    except dns.rdatatype.UnknownRdatatype:
        return None


def type_to_text(rtype: int) -> str:
    """miekg ``TypeToString[rtype]``: "" for a type miekg has no name for."""
    text = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rtype))
    return "" if text.startswith("TYPE") else text


def class_from_text(text: str) -> int | None:
    return CLASSES.get(text)


def class_to_text(rclass: int) -> str:
    return CLASS_NAMES.get(rclass, "")


def rcode_from_text(text: str) -> int | None:
    return RCODES.get(text)
