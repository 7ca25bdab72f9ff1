"""Which digit runs are personal numbers: cards, IBANs, US SSNs, phones (pure).

A validator gets the text and a candidate span and returns the end it accepts (<= end) or
None. Redaction runs before every scorer, so a false positive costs accuracy on every case
(numbers in answers are evidence): shapes only a personal number has are accepted on shape,
ambiguous ones (bare digit runs) need the nearest context word.

Decisions (each checked in tests/test_redact*.py, measured in bench/redaction.py):
- Cards: 13-19 digits starting 2-6. A card grouping (4-4-4-4, 4-6-5, 4-4-4-4-3...) with one
  separator (space, dash or dot) is a card even when Luhn fails (a mistyped card is still a
  card) unless an identifier word (order, reference, SKU...) stands right before it; a bare run
  is a card if Luhn holds and no identifier word stands right before it, or if a card word is
  the nearest context word.
- IBANs: a registry country and its exact length; mod-97 must hold, except for an upper-case
  value grouped in fours or with at least 10 digits (a typo in an account number).
- SSNs (AAA-GG-SSSS, SSA rules: area not 000/666/9xx, group not 00, serial not 0000): dashed
  on shape unless an identifier word is nearest; spaced or bare only next to "SSN"/"social
  security".
- Phones: see _phone_shape_ok; a 7-digit local number (555-0132) only after a phone word.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


PHONE_WORDS = words(
    "phone phones tel telephone mobile cell cellphone call calls calling called callback sms "
    "whatsapp fax contact dial mob ph telefon telefono teléfono tél handy móvil celular "
    "text texts ring reach landline hotline viber telegram portable appelez llámame llama "
    "ligue anrufen erreichbar 电话 手机 電話"
)
CARD_WORDS = words(
    "card cards credit debit visa mastercard amex discover jcb diners unionpay cc pan paid pay "
    "payment charged charge declined tarjeta karte kreditkarte carte cartão カード 卡"
)
# Identifiers, times and quantities: the nearest such word makes a digit run not personal.
OTHER_WORDS = words(
    "order orders invoice id ids ref reference account acct tracking sku ticket case customer "
    "transaction txn po isbn serial timestamp ts epoch unix time date created updated modified "
    "expires expiry exp iat nbf seconds secs ms build version rev commit batch job run pid uid "
    "port row rows count total amount balance price cost zip postcode max min maximum minimum "
    "limit int uint long size bytes hash checksum seed offset sum population votes lot"
)
PLACEHOLDER = re.compile(r"\[[A-Z_]+_\d+\]")
_WORD = re.compile(r"[^\W\d_]+")
_NANP_BARE = re.compile(r"1?[2-9]\d\d[2-9]\d{6}")
_SSN_WORDS = re.compile(r"(?i)\b(?:ssn|ss#|social security|seguro social|itin)\b")


def _same_cell(window: str, *, before: bool) -> str:
    # Context ends at a line break or a table cell border: the word "call" on the line above
    # says nothing about a timestamp on this one.
    cut = re.split(r"[\n|]", window)
    return cut[-1] if before else cut[0]


def context(text: str, start: int, end: int, yes: frozenset[str]) -> str | None:
    """'yes', 'other' or None: the nearest classified word among the three before the number
    (or, failing those, the two after it)."""
    before = _same_cell(PLACEHOLDER.sub(" ", text[max(0, start - 40) : start]), before=True)
    for word in reversed(_WORD.findall(before.lower())[-3:]):
        if word in yes:
            return "yes"
        if word in OTHER_WORDS:
            return "other"
    after = _same_cell(PLACEHOLDER.sub(" ", text[end : end + 24]), before=False).lower()
    for word in _WORD.findall(after)[:2]:
        if word in OTHER_WORDS:
            return "other"
        if word in yes:
            return "yes"
    return None


def _word_before(text: str, start: int) -> str:
    before = _same_cell(PLACEHOLDER.sub(" ", text[max(0, start - 40) : start]), before=True)
    found = _WORD.findall(before.lower())
    return found[-1] if found else ""


def _shorter(value: str, seps: str) -> Iterator[int]:
    """Lengths of `value`, longest first, cut at separators: a greedy match may have taken a
    following number (a year after a card, a count after a phone)."""
    yield len(value)
    for i in range(len(value) - 1, 0, -1):
        if value[i] in seps:
            yield i


# --- cards ---------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card_grouping(sizes: list[int]) -> bool:
    if sizes[:3] == [4, 6, 5] or sizes[:3] == [4, 6, 4]:  # Amex, Diners
        return len(sizes) == 3
    return len(sizes) >= 4 and sizes[:3] == [4, 4, 4] and 1 <= sizes[3] <= 4 and len(sizes) <= 5


def card(text: str, start: int, end: int) -> int | None:
    value = text[start:end]
    for n in _shorter(value, " .-"):
        cut = value[:n]
        digits = re.sub(r"\D", "", cut)
        groups = re.split(r"[ .-]", cut)
        if not (13 <= len(digits) <= 19 and digits[0] in "23456") or len(groups) == 2:
            continue
        if len(set(re.findall(r"[ .-]", cut))) > 1:
            continue  # one separator style: "2024-05 1234.5678" is not a card
        where = context(text, start, start + n, CARD_WORDS)
        labelled_id = _word_before(text, start) in OTHER_WORDS  # "SKU 4111...", "order 4242..."
        luhn = luhn_ok(digits)
        if len(groups) == 1:
            ok = (luhn and not labelled_id) or where == "yes"
        elif _card_grouping([len(g) for g in groups]):
            ok = luhn or not labelled_id
        else:
            ok = luhn and "." not in cut
        if ok:
            return start + n
    return None


# --- IBANs ---------------------------------------------------------------------------------

# IBAN length per country (ISO 13616 registry): the country and its length must both fit.
_IBAN_TABLE = (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 "
    "DO28 EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 "
    "IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 "
    "MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 SE24 SI19 SK24 SM27 "
    "ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20"
)
IBAN_LENGTHS = {entry[:2]: int(entry[2:]) for entry in _IBAN_TABLE.split()}


def iban_ok(value: str) -> bool:
    compact = re.sub(r"[ -]", "", value).upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban_like(value: str) -> bool:
    """Right country and length, wrong check digits: still an account number if it looks like
    one (upper case, and grouped in fours or mostly digits)."""
    compact = re.sub(r"[ -]", "", value)
    if not compact.isupper() or IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    grouped = bool(re.fullmatch(r"[A-Z]{2}\d{2}(?:[ -][A-Z0-9]{4})+(?:[ -][A-Z0-9]{1,3})?", value))
    return grouped or sum(c.isdigit() for c in compact[4:]) >= 10


def iban(text: str, start: int, end: int) -> int | None:
    value = text[start:end]
    for n in _shorter(value, " -"):
        if iban_ok(value[:n]) or _iban_like(value[:n]):
            return start + n
    return None


# --- US social security numbers ------------------------------------------------------------


def ssn(text: str, start: int, end: int) -> int | None:
    digits = re.sub(r"\D", "", text[start:end])
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    if "-" in text[start:end]:
        return None if context(text, start, end, frozenset()) == "other" else end
    line_before = _same_cell(text[max(0, start - 40) : start], before=True)
    line_after = _same_cell(text[end : end + 16], before=False)
    return end if _SSN_WORDS.search(line_before) or _SSN_WORDS.search(line_after) else None


# --- phones --------------------------------------------------------------------------------


def _phone_shape_ok(value: str, digits: str, where: Callable[[], str | None]) -> bool:
    if value.startswith("+"):
        return 8 <= len(digits) <= 15
    if len(digits) == 7:  # a local number: 555-0132, only right after a phone word
        return bool(re.fullmatch(r"\d{3}[ .-]\d{4}", value)) and where() == "yes"
    if not 9 <= len(digits) <= 13:
        return False
    groups = re.findall(r"\d+", value)
    if re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", value) and all(int(g) <= 255 for g in groups):
        return False  # an IPv4 address
    sizes = [len(g) for g in groups]
    # Shapes only phones have: (415) 555-0132, 415-555-0132, 1.415.555.0132, and national
    # formats with a trunk 0 (020 7946 0958, 01 23 45 67 89, 030 1234567, 07700900077) unless
    # an identifier word is nearest ("order 015-12-6535").
    if "(" in value or sizes in ([3, 3, 4], [1, 3, 3, 4]):
        return True
    trunk = groups[0].startswith("0") and not groups[0].startswith("00")
    near = where()
    if trunk and len(groups) > 1 and all(s >= 2 for s in sizes[1:]) and near != "other":
        return True
    # Bare runs and other groupings (timestamps, thousands, IDs) depend on the nearest word.
    if near == "yes":
        return True
    if near is None and len(groups) == 1:
        return bool(_NANP_BARE.fullmatch(digits)) or (trunk and len(digits) in (10, 11))
    return False


def phone(text: str, start: int, end: int) -> int | None:
    value = text[start:end]
    for n in _shorter(value, " .-"):
        candidate = value[:n].rstrip(" .-")
        digits = re.sub(r"\D", "", candidate)
        if len(digits) < 7:
            return None  # shorter cuts have fewer digits still
        where = functools.partial(context, text, start, start + n, PHONE_WORDS)
        if _phone_shape_ok(candidate, digits, where):
            return start + n
    return None
