"""Water tariffs and the bills they imply: pure, exact money (docs/operate.md "Tariffs and bills").

A tariff file (TOML) holds versions of each utility's tariff, each effective from a date:

    utility = "aguas-norte"            # the utility this gateway bills (optional with one utility)

    [[tariff]]
    utility = "aguas-norte"
    effective = 2026-01-01             # the version in force for a month: the newest effective
    currency = "EUR"                   # on or before the month's first day
    minimum_m3 = 10                    # the minimum charge covers the first 10 m3
    minimum_charge = "9.50"
    sewage_percent = "45"              # sewage: 45 % of the water charge
    blocks = [
      {from_m3 = 10, to_m3 = 20, price = "1.20"},    # per m3 above 10, up to 20
      {from_m3 = 20, to_m3 = 50, price = "2.10"},
      {from_m3 = 50, price = "3.40"},                # the last block is open-ended
    ]

Consumption is billed exactly: the store counts millilitres, a millilitre is 0.000001 m3,
and each block bills the exact fraction of a m3 that falls in it (no rounding of volumes,
nothing carried to the next month). Block bounds are whole m3; a block from 10 to 20 bills
the consumption above 10 m3 and up to 20 m3 included, so 10 m3 exactly is all in the
minimum and 10 m3 + 1 ml bills 0.000001 m3 in the 10-20 block.

Money is Decimal, never float. Rounding happens in exactly two places, each to the
currency's minor unit (`decimals`, default 2) and half up (0.005 -> 0.01):
  1. each block line: its m3 x its unit price;
  2. the sewage charge: the water charge x sewage_percent / 100.
The water charge is the minimum charge plus the (already rounded) block lines, and the
total is water plus sewage, so every figure on a bill adds up to the cent.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from pathlib import Path

ML_PER_M3 = 1_000_000
MAX_M3 = 10**9                  # a block bound
MAX_PRICE = Decimal(10**6)      # a unit price or a minimum charge
MAX_PERCENT = Decimal(1000)
MAX_BLOCKS = 20
MAX_VERSIONS = 1000
PRICE_DECIMALS = 6
PERCENT_DECIMALS = 4
CURRENCY_RE = re.compile(r"[A-Z]{3}")
UTILITY_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

_TOP_KEYS = ("utility", "tariff")
_VERSION_KEYS = ("utility", "effective", "name", "currency", "decimals", "minimum_m3", "minimum_charge",
                 "sewage_percent", "blocks")
_BLOCK_KEYS = ("from_m3", "to_m3", "price")


class TariffError(ValueError):
    def __init__(self, errors: list[str], source: str = "tariff file"):
        self.errors = errors
        super().__init__(f"{source} has {len(errors)} error(s):\n  " + "\n  ".join(errors))


@dataclass(frozen=True)
class Block:
    from_m3: int
    to_m3: int | None   # None: open-ended (the last block)
    price: Decimal      # per m3

    @property
    def label(self) -> str:
        return f"{self.from_m3}+" if self.to_m3 is None else f"{self.from_m3}-{self.to_m3}"


@dataclass(frozen=True)
class TariffVersion:
    utility: str
    effective: date
    currency: str
    decimals: int
    minimum_m3: int
    minimum_charge: Decimal
    sewage_percent: Decimal
    blocks: tuple[Block, ...]
    name: str = ""

    def to_json(self) -> dict:
        return {"utility": self.utility, "effective": self.effective.isoformat(), "name": self.name or None,
                "currency": self.currency, "minimum_m3": self.minimum_m3,
                "minimum_charge": money(self.minimum_charge, self.decimals),
                "sewage_percent": str(self.sewage_percent),
                "blocks": [{"from_m3": b.from_m3, "to_m3": b.to_m3, "price": str(b.price)} for b in self.blocks]}


@dataclass(frozen=True)
class TariffTable:
    utility: str                           # the utility this gateway bills
    versions: tuple[TariffVersion, ...]    # of that utility, oldest first

    def in_force(self, first_day: date) -> TariffVersion | None:
        """The newest version effective on or before the billing period's first day."""
        found = None
        for v in self.versions:
            if v.effective <= first_day:
                found = v
        return found


@dataclass(frozen=True)
class Line:
    block: str                 # "0-10", "10-20", "50+"
    from_m3: int
    to_m3: int | None
    minimum: bool              # the minimum charge's line (unit_price None)
    ml: int                    # consumption in this block
    unit_price: Decimal | None
    amount: Decimal


@dataclass(frozen=True)
class Bill:
    tariff: TariffVersion
    ml: int
    lines: tuple[Line, ...]
    water: Decimal
    sewage: Decimal
    total: Decimal


def m3(ml: int) -> Decimal:
    """Millilitres as exact cubic metres (6 decimals)."""
    return Decimal(ml).scaleb(-6)


def m3_text(ml: int) -> str:
    """Millilitres as exact cubic metres, written out: 10000001 -> "10.000001"."""
    return format(m3(ml), "f")


def money(amount: Decimal, decimals: int) -> str:
    return str(amount.quantize(Decimal(1).scaleb(-decimals)))


def _round(amount: Decimal, decimals: int) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def compute_bill(t: TariffVersion, ml: int) -> Bill:
    """The bill for `ml` millilitres in one period under tariff version `t`."""
    if ml < 0:
        raise ValueError(f"consumption must not be negative, got {ml} ml")
    with localcontext(prec=60):  # products of 6-decimal m3 and 6-decimal prices stay exact
        return _bill(t, ml)


def _bill(t: TariffVersion, ml: int) -> Bill:
    lines = []
    minimum_ml = t.minimum_m3 * ML_PER_M3
    if t.minimum_m3 or t.minimum_charge:
        lines.append(Line(f"0-{t.minimum_m3}", 0, t.minimum_m3, True, min(ml, minimum_ml), None,
                          _round(t.minimum_charge, t.decimals)))
    for b in t.blocks:
        lo = b.from_m3 * ML_PER_M3
        in_block = ml - lo if b.to_m3 is None else min(ml, b.to_m3 * ML_PER_M3) - lo
        if in_block > 0:
            lines.append(Line(b.label, b.from_m3, b.to_m3, False, in_block, b.price,
                              _round(m3(in_block) * b.price, t.decimals)))  # rounding 1: each line
    water = sum((ln.amount for ln in lines), Decimal(0).scaleb(-t.decimals))  # 0.00 when no line
    sewage = _round(water * t.sewage_percent / 100, t.decimals)        # rounding 2: sewage
    return Bill(t, ml, tuple(lines), water, sewage, water + sewage)


# ------------------------------------------------------------------ parsing


def _show(v) -> str:
    return repr(v)[:40]


def _decimal(v, places: int) -> Decimal | None:
    """A TOML string, integer or float as an exact Decimal with at most `places` decimals
    (a float is taken as written: 1.2 is 1.2, not the nearest double)."""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        return None
    try:
        d = Decimal(str(v).strip())
    except InvalidOperation:
        return None
    if not d.is_finite() or d.as_tuple().exponent < -places:
        return None
    return d


def _parse_date(v) -> date | None:
    if isinstance(v, date) and not hasattr(v, "hour"):
        return v
    if isinstance(v, str):
        try:
            return date.fromisoformat(v)
        except ValueError:
            return None
    return None


def _bound(v) -> int | None:
    return v if type(v) is int and 0 <= v <= MAX_M3 else None


def _parse_blocks(blocks, at: str, minimum_m3: int | None, errors: list[str]) -> tuple[Block, ...]:
    if not isinstance(blocks, list) or not blocks:
        errors.append(f"{at}.blocks: must be a list of one or more blocks such as "
                      "{from_m3 = 10, to_m3 = 20, price = \"1.20\"}, the last without to_m3")
        return ()
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"{at}.blocks: at most {MAX_BLOCKS} blocks, got {len(blocks)}")
        return ()
    out: list[Block] = []
    prev_to = minimum_m3
    for j, b in enumerate(blocks, 1):
        here = f"{at}.blocks[{j}]"
        last = j == len(blocks)
        if not isinstance(b, dict):
            errors.append(f"{here}: must be a table {{from_m3, to_m3, price}}, got {_show(b)}")
            prev_to = None
            continue
        for key in b:
            if key not in _BLOCK_KEYS:
                errors.append(f"{here}.{str(key)[:40]}: unknown key (known: {', '.join(_BLOCK_KEYS)})")
        lo = _bound(b.get("from_m3"))
        if lo is None:
            errors.append(f"{here}.from_m3: must be whole m3 from 0 to {MAX_M3}, got {_show(b.get('from_m3'))}")
        elif prev_to is not None and lo != prev_to:
            what = "the minimum's minimum_m3" if j == 1 else f"blocks[{j - 1}].to_m3"
            errors.append(f"{here}.from_m3: must be {prev_to} ({what}): blocks are contiguous, got {lo}")
        hi = b.get("to_m3")
        if last:
            if hi is not None:
                errors.append(f"{here}.to_m3: the last block is open-ended: leave to_m3 out, got {_show(hi)}")
        elif _bound(hi) is None:
            errors.append(f"{here}.to_m3: must be whole m3 from 0 to {MAX_M3} (only the last block is "
                          f"open-ended), got {_show(hi)}")
            hi = None
        elif lo is not None and hi <= lo:
            errors.append(f"{here}.to_m3: must be above from_m3 ({lo}), got {hi}")
        price = _decimal(b.get("price"), PRICE_DECIMALS)
        if price is None or not 0 <= price <= MAX_PRICE:
            errors.append(f"{here}.price: must be a price per m3 from 0 to {MAX_PRICE} with at most "
                          f"{PRICE_DECIMALS} decimals, such as \"1.20\", got {_show(b.get('price'))}")
        prev_to = hi if not last else None
        if lo is not None and price is not None:
            out.append(Block(lo, None if last else hi, price))
    return tuple(out)


def _parse_version(obj, at: str, errors: list[str]) -> TariffVersion | None:
    if not isinstance(obj, dict):
        errors.append(f"{at}: must be a table ([[tariff]] in the file)")
        return None
    before = len(errors)
    for key in obj:
        if key not in _VERSION_KEYS:
            errors.append(f"{at}.{str(key)[:40]}: unknown key (known: {', '.join(_VERSION_KEYS)})")
    utility = obj.get("utility")
    if not isinstance(utility, str) or not UTILITY_RE.fullmatch(utility):
        errors.append(f"{at}.utility: must be 1-64 of a-z 0-9 _ - starting with a letter or digit, "
                      f"got {_show(utility)}")
    effective = _parse_date(obj.get("effective"))
    if effective is None:
        errors.append(f"{at}.effective: must be a date such as 2026-01-01, got {_show(obj.get('effective'))}")
    name = obj.get("name", "")
    if not isinstance(name, str) or len(name) > 100:
        errors.append(f"{at}.name: must be a text of at most 100 characters, got {_show(name)}")
    currency = obj.get("currency")
    if not isinstance(currency, str) or not CURRENCY_RE.fullmatch(currency):
        errors.append(f"{at}.currency: must be an ISO 4217 code such as \"EUR\", got {_show(currency)}")
    decimals = obj.get("decimals", 2)
    if type(decimals) is not int or not 0 <= decimals <= 4:
        errors.append(f"{at}.decimals: must be the currency's minor unit digits, 0 to 4 (2 for cents), "
                      f"got {_show(decimals)}")
        decimals = 4
    minimum_m3 = _bound(obj.get("minimum_m3", 0))
    if minimum_m3 is None:
        errors.append(f"{at}.minimum_m3: must be whole m3 from 0 to {MAX_M3} (what the minimum charge covers), "
                      f"got {_show(obj.get('minimum_m3'))}")
    minimum_charge = _decimal(obj.get("minimum_charge", 0), decimals)
    if minimum_charge is None or not 0 <= minimum_charge <= MAX_PRICE:
        errors.append(f"{at}.minimum_charge: must be an amount from 0 to {MAX_PRICE} with at most {decimals} "
                      f"decimals, such as \"9.50\", got {_show(obj.get('minimum_charge'))}")
    sewage = _decimal(obj.get("sewage_percent", 0), PERCENT_DECIMALS)
    if sewage is None or not 0 <= sewage <= MAX_PERCENT:
        errors.append(f"{at}.sewage_percent: must be a percentage of the water charge from 0 to {MAX_PERCENT} "
                      f"with at most {PERCENT_DECIMALS} decimals, got {_show(obj.get('sewage_percent'))}")
    blocks = _parse_blocks(obj.get("blocks"), at, minimum_m3, errors)
    if len(errors) > before:
        return None
    return TariffVersion(utility, effective, currency, decimals, minimum_m3, minimum_charge, sewage, blocks, name)


def parse_table(obj) -> TariffTable:
    """A tariff table from the parsed TOML; every error at once as `<field>: <problem>`,
    with [[tariff]] entries and blocks counted from 1 (tariff[1] is the first)."""
    errors: list[str] = []
    if not isinstance(obj, dict):
        raise TariffError(["(top level): must be a table"])
    for key in obj:
        if key not in _TOP_KEYS:
            errors.append(f"{str(key)[:40]}: unknown key (known: utility and the [[tariff]] tables)")
    entries = obj.get("tariff")
    if not isinstance(entries, list) or not entries:
        errors.append("tariff: no [[tariff]] table: the file needs at least one tariff version")
        entries = []
    elif len(entries) > MAX_VERSIONS:
        errors.append(f"tariff: at most {MAX_VERSIONS} versions, got {len(entries)}")
        entries = []
    versions = []
    seen: dict[tuple[str, date], int] = {}
    for i, entry in enumerate(entries, 1):
        v = _parse_version(entry, f"tariff[{i}]", errors)
        if v is None:
            continue
        first = seen.setdefault((v.utility, v.effective), i)
        if first != i:
            errors.append(f"tariff[{i}].effective: {v.utility} already has a version effective "
                          f"{v.effective.isoformat()} (tariff[{first}]); each date once per utility")
        versions.append(v)
    utilities = sorted({v.utility for v in versions})
    utility = obj.get("utility")
    if utility is not None and not isinstance(utility, str):
        errors.append(f"utility: must name the utility this gateway bills, got {_show(utility)}")
    elif utility is None and len(utilities) > 1:
        errors.append(f"utility: the file has tariffs of several utilities ({', '.join(utilities)}); "
                      "name the one this gateway bills")
    elif utility is not None and utilities and utility not in utilities:
        errors.append(f"utility: no [[tariff]] for {utility!r} (the file has {', '.join(utilities)})")
    if errors:
        raise TariffError(errors)
    utility = utility or utilities[0]
    mine = sorted((v for v in versions if v.utility == utility), key=lambda v: v.effective)
    return TariffTable(utility, tuple(mine))


def load(path: str | Path) -> TariffTable:
    """The tariff file at `path`; TariffError lists every problem (and names the file)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TariffError([f"{path}: file not found"], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TariffError([f"{path}: cannot read: {exc}"], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise TariffError([f"{path}: not valid TOML: {exc}"], str(path)) from None
    try:
        return parse_table(raw)
    except TariffError as exc:
        raise TariffError(exc.errors, str(path)) from None
