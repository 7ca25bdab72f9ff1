"""A seeded corpus for the redactor: secrets embedded in realistic trace text, and look-alikes
(order numbers, Unix timestamps, prices, table values, versions, UUIDs, IPs) that must survive.

`corpus(seed)` is deterministic: the same seed gives the same documents, so a failure names a
seed and a document index that reproduce it. Values are synthetic (random digits with valid
check digits, documentation-range numbers); none is a real credential.
"""

from __future__ import annotations

import base64
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"


@dataclass(frozen=True)
class Doc:
    text: str
    secrets: tuple[tuple[str, str], ...]  # (kind, value) that must not survive
    lookalikes: tuple[str, ...]  # substrings that must survive unchanged


# --- secret makers: (rng) -> (kind, value, sentence containing it) ------------------------


def _s(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + _s(rng, string.digits, length - len(prefix) - 1)
    for check in string.digits:
        digits = body + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            n = int(ch)
            if i % 2 == 1:
                n = n * 2 - 9 if n > 4 else n * 2
            total += n
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


def card(rng: random.Random) -> tuple[str, str, str]:
    brand = rng.choice(["visa", "mc", "mc2", "amex", "discover"])
    if brand == "amex":
        d = _luhn_complete(rng.choice(["34", "37"]), 15, rng)
        value = rng.choice([f"{d[:4]} {d[4:10]} {d[10:]}", f"{d[:4]}-{d[4:10]}-{d[10:]}", d])
    else:
        prefix = {"visa": "4", "mc": str(rng.randint(51, 55)), "mc2": "2221", "discover": "6011"}
        d = _luhn_complete(prefix[brand], 16, rng)
        sep = rng.choice([" ", "-", ""])
        value = sep.join(d[i : i + 4] for i in range(0, 16, 4))
    line = rng.choice([
        "Please charge my card {v} for the renewal.",
        "card_number: {v}\nexpiry: 09/27",
        "The customer read out {v} over chat, exp 11/26.",
    ])  # fmt: skip
    return "CARD", value, line.format(v=value)


def _nanp(rng: random.Random) -> tuple[str, str, str]:
    return str(rng.randint(201, 989)), str(rng.randint(200, 999)), f"{rng.randint(0, 9999):04d}"


def phone(rng: random.Random) -> tuple[str, str, str]:
    a, e, x = _nanp(rng)
    value = rng.choice([
        f"+1 ({a}) {e}-{x}", f"({a}) {e}-{x}", f"{a}-{e}-{x}", f"{a}.{e}.{x}", f"{a} {e} {x}",
        f"{a}{e}{x}",  # bare, North American shape
        f"+44 20 {rng.randint(7000, 8999)} {rng.randint(1000, 9999)}",
        f"020 {rng.randint(7000, 8999)} {rng.randint(1000, 9999)}",
        f"+49 30 {rng.randint(1000000, 9999999)}",
        f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        f"01 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        f"+91 {rng.randint(70000, 99999)} {rng.randint(10000, 99999)}",
        f"+4915{rng.randint(100000000, 999999999)}",
    ])  # fmt: skip
    line = rng.choice([
        "You can reach me on {v} after 5pm.",
        "Customer phone: {v}",
        '{{"name": "Dana", "phone": "{v}"}}',
        "Caller left a voicemail, callback number {v}.",
        "| Dana Kim | {v} | Berlin |",
    ])  # fmt: skip
    return "PHONE", value, line.format(v=value)


def phone_with_context(rng: random.Random) -> tuple[str, str, str]:
    # Bare runs that are not North American: only a phone word makes them phones.
    value = rng.choice([
        f"07{rng.randint(100000000, 999999999)}",
        f"1{rng.randint(100000000, 999999999)}",  # starts with 1, like a timestamp
        f"9{rng.randint(100000000, 999999999)}",
    ])  # fmt: skip
    line = rng.choice(["mobile: {v}", "Tel. {v}", "please call {v} tomorrow", "WhatsApp {v}"])
    return "PHONE", value, line.format(v=value)


_NAMES = ["jane.doe", "m.rossi", "li.wei", "o'neil", "ana+billing", "k_tanaka", "dev-ops"]
_DOMAINS = ["example.com", "mail.example.co.uk", "corp.example.org", "example.io"]
_UNICODE_EMAILS = [
    "jürgen@münchen.de", "用户@例子.广告", "josé.garcía@correo.es", "δοκιμή@παράδειγμα.ελ",
    "почта@пример.рф", "すし@例え.テスト", "zoë@bücher.example", "अजय@डाटामेल.भारत",
]  # fmt: skip


def email(rng: random.Random) -> tuple[str, str, str]:
    if rng.random() < 0.35:
        value = rng.choice(_UNICODE_EMAILS)
    else:
        value = (
            f"{rng.choice(_NAMES).replace(chr(39), '')}{rng.randint(1, 99)}@{rng.choice(_DOMAINS)}"
        )
    line = rng.choice([
        "Send the invoice to {v}, thanks!",
        "From: {v}\nSubject: refund",
        '"email": "{v}",',
        "Contact <{v}> for access.",
    ])  # fmt: skip
    return "EMAIL", value, line.format(v=value)


def aws(rng: random.Random) -> tuple[str, str, str]:
    key_id = rng.choice(["AKIA", "ASIA"]) + _s(rng, string.ascii_uppercase + "234567", 16)
    secret = _s(rng, ALNUM + "/+", 40)
    form = rng.randrange(4)
    if form == 0:
        return (
            "AWS_SECRET",
            secret,
            (
                f'{{"Credentials": {{"AccessKeyId": "{key_id}", "SecretAccessKey": "{secret}", '
                f'"Expiration": "2025-01-01T00:00:00Z"}}}}'
            ),
        )
    if form == 1:
        return (
            "AWS_SECRET",
            secret,
            (f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"),
        )
    if form == 2:
        return "AWS_SECRET", secret, f"export AWS_SECRET_ACCESS_KEY={secret}"
    return "API_KEY", key_id, f"The failing request was signed with {key_id} (us-east-1)."


def api_key(rng: random.Random) -> tuple[str, str, str]:
    value = rng.choice([
        rng.choice(["sk_live_", "sk_test_", "rk_live_", "pk_live_"]) + _s(rng, ALNUM, 24),
        "hf_" + _s(rng, string.ascii_letters, 34),
        "sk-proj-" + _s(rng, ALNUM, 40),
        "ghp_" + _s(rng, ALNUM, 36),
        "xoxb-" + "-".join(_s(rng, string.digits, 11) for _ in range(2)) + "-" + _s(rng, ALNUM, 24),
    ])  # fmt: skip
    line = rng.choice([
        "STRIPE_KEY={v}", "token = '{v}'  # TODO move to vault", "I pasted {v} into the config.",
    ])  # fmt: skip
    return "API_KEY", value, line.format(v=value)


def bearer(rng: random.Random) -> tuple[str, str, str]:
    value = _s(rng, ALNUM + "-_.", rng.randint(24, 60))
    line = rng.choice([
        "curl -H 'Authorization: Bearer {v}' https://api.example.com/v1/items",
        "Authorization: bearer {v}",
        "headers = {{'Authorization': 'Bearer {v}'}}",
    ])  # fmt: skip
    return "AUTH_TOKEN", value, line.format(v=value)


def url_password(rng: random.Random) -> tuple[str, str, str]:
    pw = _s(rng, ALNUM, rng.randint(8, 20)) + rng.choice(["!", "%21", "$", "_", ""])
    scheme, host = rng.choice([
        ("postgres", "db.internal:5432/app"), ("mysql", "10.0.3.4/shop"),
        ("https", "git.example.com/repo.git"), ("redis", "cache:6379/0"),
        ("amqp", "mq.example.net:5672/"),
    ])  # fmt: skip
    user = rng.choice(["admin", "app", "svc_reader", ""])
    value = f"{scheme}://{user}:{pw}@{host}"
    return "URL_PASSWORD", pw, f"DATABASE_URL={value}" if rng.random() < 0.5 else f"Use {value}."


def pem(rng: random.Random) -> tuple[str, str, str]:
    label = rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
    raw = base64.b64encode(rng.randbytes(rng.randint(120, 400))).decode()
    body = "\n".join(raw[i : i + 64] for i in range(0, len(raw), 64))
    block = f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"
    if rng.random() < 0.3:  # as a JSON string value (service-account files)
        escaped = block.replace("\n", "\\n")
        return (
            "PRIVATE_KEY",
            raw[:48],
            f'{{"type": "service_account", "private_key": "{escaped}\\n"}}',
        )
    return "PRIVATE_KEY", raw[:48], f"Here is the deploy key:\n{block}\nPlease rotate it."


_IBAN_BBAN = {"DE": 18, "GB": 18, "FR": 23, "NL": 14, "ES": 20, "IT": 23, "CH": 17, "BE": 12}


def _iban(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def iban(rng: random.Random) -> tuple[str, str, str]:
    country = rng.choice(sorted(_IBAN_BBAN))
    n = _IBAN_BBAN[country]
    if country == "GB" or country == "NL":
        bban = _s(rng, string.ascii_uppercase, 4) + _s(rng, string.digits, n - 4)
    else:
        bban = _s(rng, string.digits, n)
    compact = _iban(country, bban)
    value = " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    value = value if rng.random() < 0.6 else compact
    line = rng.choice(["IBAN: {v}", "Please wire the deposit to {v} (ref. lease 2024).",
                       "| Payee | {v} |"])  # fmt: skip
    return "IBAN", value, line.format(v=value)


def password(rng: random.Random) -> tuple[str, str, str]:
    value = _s(rng, ALNUM + "!#%&*", rng.randint(8, 16))
    line = rng.choice(['password: "{v}"', "DB_PASSWORD={v}", '{{"client_secret": "{v}"}}'])
    return "PASSWORD", value, line.format(v=value)


SECRET_MAKERS: tuple[Callable[[random.Random], tuple[str, str, str]], ...] = (
    card, phone, phone, phone_with_context, email, email, aws, api_key, bearer, url_password,
    pem, iban, password,
)  # fmt: skip

# --- look-alikes: (rng) -> (value that must survive, sentence) -----------------------------


def _ts(rng: random.Random) -> str:
    return str(rng.randint(1_000_000_000, 1_999_999_999))  # 2001-09-09 .. 2033-05-18


def lookalike(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(16)
    if kind == 0:
        v = _ts(rng)
        return v, rng.choice([f'"created_at": {v},', f"ts={v} level=info", f"at {v} the job ran",
                              f"| {v} | 200 | 34ms |", f"{v}"])  # fmt: skip
    if kind == 1:
        v = str(rng.randint(10**11, 10**12 - 1))
        return v, f"Your order number is {v}."
    if kind == 2:
        v = f"{rng.randint(2, 9)}{rng.randint(10**8, 10**9 - 1)}"
        return v, rng.choice([f"Order {v} has shipped.", f"invoice {v} is overdue",
                              f"ticket id {v}"])  # fmt: skip
    if kind == 3:
        v = f"${rng.randint(1, 99)},{rng.randint(100, 999)}.{rng.randint(10, 99)}"
        return v, f"The enterprise plan costs {v} per year."
    if kind == 4:
        v = f"{rng.randint(1, 9)} {rng.randint(100, 999)} {rng.randint(100, 999)} {rng.randint(100, 999)}"
        return v, f"Population in 2022: {v}."
    if kind == 5:
        v = f"| {rng.randint(1000, 9999)} | {rng.random():.3f} | {rng.randint(10, 99)}.{rng.randint(0, 9)}% |"
        return v, f"| region | score | share |\n{v}"
    if kind == 6:
        v = f"{rng.randint(1, 20)}.{rng.randint(0, 40)}.{rng.randint(0, 30)}"
        return v, rng.choice([f"Upgrade to version {v}.", f"requests=={v}", f"v{v} released"])
    if kind == 7:
        v = f"10.0.{rng.randint(10000, 22631)}.{rng.randint(1000, 4000)}"
        return v, f"Windows build {v}"
    if kind == 8:
        v = "-".join(_s(rng, "0123456789abcdef", n) for n in (8, 4, 4, 4, 12))
        return v, f"trace_id={v}"
    if kind == 9:
        v = f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        return v, f"Request from {v} was throttled."
    if kind == 10:
        v = f"{rng.randint(2019, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:15:00Z"
        return v, f"Last login {v}."
    if kind == 11:
        d = list("4" + _s(rng, string.digits, 15))
        while _luhn(d):  # make it fail Luhn
            d[-1] = str((int(d[-1]) + 1) % 10)
        v = " ".join("".join(d[i : i + 4]) for i in range(0, 16, 4))
        # Luhn fails and an identifier word stands right before it: a reference, not a card.
        return v, f"Reference {v} (not a card: fails Luhn)."
    if kind == 12:
        v = _s(rng, "0123456789abcdef", 40)
        return v, f"Fixed in commit {v}."
    if kind == 13:
        v = f"{rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}"
        return v, f"Scores per round: {v}"
    if kind == 14:
        v = f"{_ts(rng)}{rng.randint(100, 999)}"
        return v, f'"timestamp_ms": {v}'
    v = rng.choice(["Bearer tokens", "password reset", "hf_hub_download", "@pytest.fixture",
                    "user@localhost", "sk-learn", "https://example.com:8443/a"])  # fmt: skip
    return v, f"See the docs on {v} for details."


def _luhn(digits: list[str]) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


_FILLER = [
    "Hi team, following up on the ticket from yesterday.",
    "The assistant answered the question using the retrieved documents.",
    "User: can you check my account?",
    "Assistant: Sure, let me look into that for you.",
    "2024-05-02 14:03:11 INFO worker started (pid 4312)",
    "Thanks, that fixed it!",
    "Summary of the call below.",
]


def corpus(seed: int, docs: int = 80) -> list[Doc]:
    """`docs` documents, each with 1-3 secrets and 1-3 look-alikes among filler lines."""
    rng = random.Random(seed)
    out: list[Doc] = []
    for _ in range(docs):
        secrets: list[tuple[str, str]] = []
        looks: list[str] = []
        parts: list[str] = []
        for _ in range(rng.randint(1, 3)):
            kind, value, line = rng.choice(SECRET_MAKERS)(rng)
            secrets.append((kind, value))
            parts.append(line)
        for _ in range(rng.randint(1, 3)):
            value, line = lookalike(rng)
            looks.append(value)
            parts.append(line)
        parts += rng.sample(_FILLER, rng.randint(1, 3))
        rng.shuffle(parts)
        out.append(Doc("\n".join(parts), tuple(secrets), tuple(looks)))
    return out


# Hard cases, kept apart from the seeded corpus: the secrets were once known misses and must
# all be caught now; the look-alikes must survive except the one documented limit
# (tests/test_redact_corpus.py, OVER_REDACTED_BY_DESIGN).
# (kind, value, text)
HARD_SECRETS: tuple[tuple[str, str, str], ...] = (
    ("PHONE", "98765 43210", "Ring Priya at 98765 43210 tonight."),  # phone word "ring"
    ("PASSWORD", "hunter2horse", "my password is hunter2horse"),  # prose, no key=value
    ("AWS_SECRET", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),  # no key name next to it
    ("EMAIL", "jane(at)example(dot)com", "write to jane(at)example(dot)com"),  # munged
    ("PHONE", "555-0132", "call 555-0132"),  # 7-digit local number right after a phone word
)  # fmt: skip
# (value, text)
HARD_LOOKALIKES: tuple[tuple[str, str], ...] = (
    ("2147483647", "INT_MAX is 2147483647."),  # North-American-shaped, after a quantity word
    ("4111111111111111", "SKU 4111111111111111"),  # Luhn-valid 16 digits right after "SKU"
    ("2065550100", "| 2065550100 | 3 |"),  # NANP-shaped table value, no context: the limit
    ("311", "Call 311 for city services."),  # control: too short
)
