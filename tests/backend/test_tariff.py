"""Tariffs and bills (tariff.py) against bills computed by hand.

The tariff of most tests is v2026 below (backend/tariff.example.toml's first version):
minimum charge 9.50 covering 10 m3; 10-20 m3 at 1.2750, 20-50 m3 at 2.1000, above 50 at
3.4125 per m3; sewage 43 % of the water charge; EUR, cents. Volumes are billed exactly
(1 ml = 0.000001 m3); each block line and the sewage are rounded half up to the cent.
"""

from __future__ import annotations

import tomllib
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from aquafog.config import ConfigError, GatewayConfig
from aquafog.tariff import TariffError, compute_bill, load, m3_text, parse_table

EXAMPLE = Path(__file__).parents[2] / "backend" / "tariff.example.toml"
M3 = 1_000_000  # ml

V2026 = """
[[tariff]]
utility = "north"
effective = 2026-01-01
currency = "EUR"
minimum_m3 = 10
minimum_charge = "9.50"
sewage_percent = "43"
blocks = [
  {from_m3 = 10, to_m3 = 20, price = "1.2750"},
  {from_m3 = 20, to_m3 = 50, price = "2.1000"},
  {from_m3 = 50, price = "3.4125"},
]
"""


def table(text: str):
    return parse_table(tomllib.loads(text))


@pytest.fixture(scope="module")
def v2026():
    return table(V2026).versions[0]


def summary(bill) -> tuple:
    """(lines as (block, m3, unit price, amount), water, sewage, total), all as text."""
    lines = [(ln.block, m3_text(ln.ml), None if ln.unit_price is None else str(ln.unit_price), str(ln.amount))
             for ln in bill.lines]
    return lines, str(bill.water), str(bill.sewage), str(bill.total)


MIN = ("0-10", "10.000000", None, "9.50")


@pytest.mark.parametrize("ml,expected", [
    # nothing used: the minimum charge alone.
    # water 9.50; sewage 9.50 x 0.43 = 4.085 -> 4.09 (half up; half-even would give 4.08); total 13.59
    (0, ([("0-10", "0.000000", None, "9.50")], "9.50", "4.09", "13.59")),
    # exactly 10 m3: all of it in the minimum, no block line; the same bill
    (10 * M3, ([MIN], "9.50", "4.09", "13.59")),
    # 10 m3 + 1 ml: 0.000001 m3 in 10-20, x 1.2750 = 0.000001275 -> 0.00; the same totals
    (10 * M3 + 1, ([MIN, ("10-20", "0.000001", "1.2750", "0.00")], "9.50", "4.09", "13.59")),
    # 10.6 m3: 0.6 x 1.2750 = 0.765 -> 0.77 (half up; half-even would give 0.76)
    # water 9.50 + 0.77 = 10.27; sewage 10.27 x 0.43 = 4.4161 -> 4.42; total 14.69
    (10_600_000, ([MIN, ("10-20", "0.600000", "1.2750", "0.77")], "10.27", "4.42", "14.69")),
    # 13.456789 m3: 3.456789 x 1.2750 = 4.407405975 -> 4.41
    # water 9.50 + 4.41 = 13.91; sewage 13.91 x 0.43 = 5.9813 -> 5.98; total 19.89
    (13_456_789, ([MIN, ("10-20", "3.456789", "1.2750", "4.41")], "13.91", "5.98", "19.89")),
    # exactly 20 m3: 10 x 1.2750 = 12.75
    # water 9.50 + 12.75 = 22.25; sewage 22.25 x 0.43 = 9.5675 -> 9.57; total 31.82
    (20 * M3, ([MIN, ("10-20", "10.000000", "1.2750", "12.75")], "22.25", "9.57", "31.82")),
    # 20 m3 + 1 ml: 0.000001 m3 in 20-50, x 2.1000 = 0.0000021 -> 0.00; the same totals
    (20 * M3 + 1, ([MIN, ("10-20", "10.000000", "1.2750", "12.75"), ("20-50", "0.000001", "2.1000", "0.00")],
                   "22.25", "9.57", "31.82")),
    # exactly 50 m3: 20-50 is 30 x 2.1000 = 63.00
    # water 9.50 + 12.75 + 63.00 = 85.25; sewage 85.25 x 0.43 = 36.6575 -> 36.66; total 121.91
    (50 * M3, ([MIN, ("10-20", "10.000000", "1.2750", "12.75"), ("20-50", "30.000000", "2.1000", "63.00")],
               "85.25", "36.66", "121.91")),
    # 50 m3 + 1 ml: 0.000001 m3 above 50, x 3.4125 = 0.0000034125 -> 0.00; the same totals
    (50 * M3 + 1, ([MIN, ("10-20", "10.000000", "1.2750", "12.75"), ("20-50", "30.000000", "2.1000", "63.00"),
                    ("50+", "0.000001", "3.4125", "0.00")], "85.25", "36.66", "121.91")),
    # 50.5 m3: 0.5 x 3.4125 = 1.70625 -> 1.71
    # water 85.25 + 1.71 = 86.96; sewage 86.96 x 0.43 = 37.3928 -> 37.39; total 124.35
    (50_500_000, ([MIN, ("10-20", "10.000000", "1.2750", "12.75"), ("20-50", "30.000000", "2.1000", "63.00"),
                   ("50+", "0.500000", "3.4125", "1.71")], "86.96", "37.39", "124.35")),
    # 123.456789 m3: 73.456789 x 3.4125 = 220.370367 + 29.3827156 + 0.9182098625 = 250.6712924625 -> 250.67
    # water 9.50 + 12.75 + 63.00 + 250.67 = 335.92; sewage 335.92 x 0.43 = 144.4456 -> 144.45; total 480.37
    (123_456_789, ([MIN, ("10-20", "10.000000", "1.2750", "12.75"), ("20-50", "30.000000", "2.1000", "63.00"),
                    ("50+", "73.456789", "3.4125", "250.67")], "335.92", "144.45", "480.37")),
])
def test_hand_computed_bills_at_every_block_boundary(v2026, ml, expected):
    bill = compute_bill(v2026, ml)
    assert summary(bill) == expected
    assert sum(ln.ml for ln in bill.lines) == ml  # every millilitre billed once
    assert bill.water == sum(ln.amount for ln in bill.lines) and bill.total == bill.water + bill.sewage


def test_sewage_is_rounded_half_up_once_on_the_water_charge():
    # water 0.50 (no blocks used): sewage at 1 % is 0.005 -> 0.01; at 0.9 % 0.0045 -> 0.00
    # (rounded once on the total water charge, never per line)
    text = V2026.replace('minimum_charge = "9.50"', 'minimum_charge = "0.50"')
    for percent, sewage, total in (("1", "0.01", "0.51"), ("0.9", "0.00", "0.50"), ("0", "0.00", "0.50"),
                                   ("100", "0.50", "1.00"), ("12.5", "0.06", "0.56")):  # 0.0625 -> 0.06
        v = table(text.replace('sewage_percent = "43"', f'sewage_percent = "{percent}"')).versions[0]
        b = compute_bill(v, 3 * M3)
        assert (str(b.water), str(b.sewage), str(b.total)) == ("0.50", sewage, total), percent
    # two lines each x.xx5 are rounded up each, and the sewage on their sum:
    # 10-20: 0.2 m3 x 1.2750 = 0.255 -> 0.26; a second tariff whose 20+ block is 0.1 m3 x 0.45 = 0.045 -> 0.05
    v = table(V2026.replace('{from_m3 = 20, to_m3 = 50, price = "2.1000"},\n  {from_m3 = 50, price = "3.4125"}',
                            '{from_m3 = 20, price = "0.45"}')).versions[0]
    b = compute_bill(v, 20 * M3 + 100_000)
    # water 9.50 + 12.75 + 0.05 = 22.30; sewage 22.30 x 0.43 = 9.589 -> 9.59; total 31.89
    assert summary(b) == ([MIN, ("10-20", "10.000000", "1.2750", "12.75"), ("20+", "0.100000", "0.45", "0.05")],
                          "22.30", "9.59", "31.89")
    b = compute_bill(table(V2026).versions[0], 10_200_000)
    assert str(b.lines[1].amount) == "0.26"  # 0.255 -> 0.26


def test_a_currency_without_cents_rounds_to_whole_units():
    v = table("""
        [[tariff]]
        utility = "kyoto"
        effective = 2026-04-01
        currency = "JPY"
        decimals = 0
        minimum_m3 = 5
        minimum_charge = 1000
        sewage_percent = 10
        blocks = [{from_m3 = 5, price = "150.5"}]
    """).versions[0]
    # 7.5 m3: 2.5 x 150.5 = 376.25 -> 376; water 1376; sewage 137.6 -> 138; total 1514
    assert summary(compute_bill(v, 7_500_000)) == (
        [("0-5", "5.000000", None, "1000"), ("5+", "2.500000", "150.5", "376")], "1376", "138", "1514")


def test_no_minimum_charge_means_no_minimum_line():
    v = table("""
        [[tariff]]
        utility = "flat"
        effective = 2026-01-01
        currency = "EUR"
        blocks = [{from_m3 = 0, price = 2}]
    """).versions[0]
    # 1.234567 m3 x 2 = 2.469134 -> 2.47; no sewage
    assert summary(compute_bill(v, 1_234_567)) == ([("0+", "1.234567", "2", "2.47")], "2.47", "0.00", "2.47")
    assert summary(compute_bill(v, 0)) == ([], "0.00", "0.00", "0.00")


def test_each_month_is_billed_by_the_version_in_force_on_its_first_day():
    t = load(EXAMPLE)  # 2026-01-01 (as V2026) and 2026-07-01: minimum 11.00, 1.50 / 2.50 / 4.00, sewage 50 %
    assert t.utility == "aguas-do-norte" and [v.effective for v in t.versions] == [date(2026, 1, 1), date(2026, 7, 1)]
    assert t.in_force(date(2025, 12, 1)) is None
    june, july = t.in_force(date(2026, 6, 1)), t.in_force(date(2026, 7, 1))
    assert june.effective == date(2026, 1, 1) and july.effective == date(2026, 7, 1)
    assert t.in_force(date(2026, 11, 1)) is july
    # 15 m3 in June (2026-01-01 version): 5 x 1.2750 = 6.375 -> 6.38
    # water 9.50 + 6.38 = 15.88; sewage 15.88 x 0.43 = 6.8284 -> 6.83; total 22.71
    assert summary(compute_bill(june, 15 * M3)) == (
        [MIN, ("10-20", "5.000000", "1.2750", "6.38")], "15.88", "6.83", "22.71")
    # 15 m3 in July (2026-07-01 version): 5 x 1.50 = 7.50
    # water 11.00 + 7.50 = 18.50; sewage 18.50 x 0.50 = 9.25; total 27.75
    assert summary(compute_bill(july, 15 * M3)) == (
        [("0-10", "10.000000", None, "11.00"), ("10-20", "5.000000", "1.50", "7.50")], "18.50", "9.25", "27.75")


def test_a_version_effective_mid_month_applies_from_the_next_month():
    t = table(V2026 + V2026.replace("2026-01-01", "2026-09-15").replace('"9.50"', '"12.00"'))
    assert t.in_force(date(2026, 9, 1)).minimum_charge == Decimal("9.50")
    assert t.in_force(date(2026, 10, 1)).minimum_charge == Decimal("12.00")


def test_the_utility_is_chosen_by_the_file():
    other = V2026.replace('"north"', '"south"').replace("9.50", "7.00")
    with pytest.raises(TariffError) as exc:
        table(V2026 + other)
    assert exc.value.errors == ["utility: the file has tariffs of several utilities (north, south); "
                                "name the one this gateway bills"]
    t = table('utility = "south"\n' + V2026 + other)
    assert t.utility == "south" and [v.minimum_charge for v in t.versions] == [Decimal("7.00")]
    with pytest.raises(TariffError, match=r"utility: no \[\[tariff\]\] for 'west' \(the file has north, south\)"):
        table('utility = "west"\n' + V2026 + other)


def test_prices_written_as_toml_numbers_are_taken_as_written():
    v = table(V2026.replace('"1.2750"', "1.275").replace('"9.50"', "9.5")).versions[0]
    assert v.blocks[0].price == Decimal("1.275") and v.minimum_charge == Decimal("9.5")
    assert str(compute_bill(v, 0).lines[0].amount) == "9.50"


BAD = """
utilty = "north"
[[tariff]]
utility = "north"
effective = "2026-02-30"
currency = "eur"
minimum_m3 = 10
minimum_charge = "9.999"
sewage_percent = -5
colour = "blue"
blocks = [
  {from_m3 = 11, to_m3 = 20, price = "1.2"},
  {from_m3 = 20, to_m3 = 20, price = "-1"},
  {from_m3 = 25, price = "abc", upto = 3},
]
[[tariff]]
utility = "North!"
effective = 2026-01-01
currency = "EUR"
blocks = [{from_m3 = 0, to_m3 = 10, price = 1}]
[[tariff]]
utility = "north"
effective = 2026-01-01
currency = "EUR"
blocks = [{from_m3 = 0, price = 1}]
[[tariff]]
utility = "north"
effective = 2026-01-01
currency = "EUR"
decimals = 7
minimum_m3 = 2.5
blocks = []
[[tariff]]
utility = "north"
effective = "2026-01-01"
currency = "EUR"
blocks = [{from_m3 = 0, price = 1.5}]
"""


def test_a_bad_file_reports_every_error_at_once_naming_the_field(tmp_path):
    f = tmp_path / "tariff.toml"
    f.write_text(BAD)
    with pytest.raises(TariffError) as exc:
        load(f)
    assert exc.value.errors == [
        "utilty: unknown key (known: utility and the [[tariff]] tables)",
        "tariff[1].colour: unknown key (known: utility, effective, name, currency, decimals, minimum_m3, "
        "minimum_charge, sewage_percent, blocks)",
        "tariff[1].effective: must be a date such as 2026-01-01, got '2026-02-30'",
        "tariff[1].currency: must be an ISO 4217 code such as \"EUR\", got 'eur'",
        "tariff[1].minimum_charge: must be an amount from 0 to 1000000 with at most 2 decimals, such as "
        "\"9.50\", got '9.999'",
        "tariff[1].sewage_percent: must be a percentage of the water charge from 0 to 1000 with at most "
        "4 decimals, got -5",
        "tariff[1].blocks[1].from_m3: must be 10 (the minimum's minimum_m3): blocks are contiguous, got 11",
        "tariff[1].blocks[2].to_m3: must be above from_m3 (20), got 20",
        "tariff[1].blocks[2].price: must be a price per m3 from 0 to 1000000 with at most 6 decimals, "
        "such as \"1.20\", got '-1'",
        "tariff[1].blocks[3].upto: unknown key (known: from_m3, to_m3, price)",
        "tariff[1].blocks[3].from_m3: must be 20 (blocks[2].to_m3): blocks are contiguous, got 25",
        "tariff[1].blocks[3].price: must be a price per m3 from 0 to 1000000 with at most 6 decimals, "
        "such as \"1.20\", got 'abc'",
        "tariff[2].utility: must be 1-64 of a-z 0-9 _ - starting with a letter or digit, got 'North!'",
        "tariff[2].blocks[1].to_m3: the last block is open-ended: leave to_m3 out, got 10",
        "tariff[4].decimals: must be the currency's minor unit digits, 0 to 4 (2 for cents), got 7",
        "tariff[4].minimum_m3: must be whole m3 from 0 to 1000000000 (what the minimum charge covers), got 2.5",
        "tariff[4].blocks: must be a list of one or more blocks such as {from_m3 = 10, to_m3 = 20, "
        "price = \"1.20\"}, the last without to_m3",
        "tariff[5].effective: north already has a version effective 2026-01-01 (tariff[3]); each date once "
        "per utility",
    ]
    assert str(f) in str(exc.value) and "18 error(s)" in str(exc.value)


@pytest.mark.parametrize("text,error", [
    ("", "tariff: no [[tariff]] table: the file needs at least one tariff version"),
    ("tariff = 3", "tariff: no [[tariff]] table: the file needs at least one tariff version"),
    ("tariff = [3]", "tariff[1]: must be a table ([[tariff]] in the file)"),
    ('[[tariff]]\nutility = "n"\neffective = 2026-01-01T00:00:00\ncurrency = "EUR"\nblocks = [{from_m3 = 0, price = 1}]',
     "tariff[1].effective: must be a date such as 2026-01-01, got datetime.datetime(2026, 1, 1, 0, 0)"),
    ('[[tariff]]\nutility = "n"\neffective = 2026-01-01\ncurrency = "EUR"\nblocks = [{from_m3 = 0, price = "NaN"}]',
     "tariff[1].blocks[1].price: must be a price per m3 from 0 to 1000000 with at most 6 decimals, such as "
     "\"1.20\", got 'NaN'"),
    ('[[tariff]]\nutility = "n"\neffective = 2026-01-01\ncurrency = "EUR"\nblocks = [{from_m3 = 0, price = true}]',
     "tariff[1].blocks[1].price: must be a price per m3 from 0 to 1000000 with at most 6 decimals, such as "
     "\"1.20\", got True"),
    ('[[tariff]]\nutility = "n"\neffective = 2026-01-01\ncurrency = "EUR"\nblocks = [{from_m3 = 0, price = 1}, '
     '{from_m3 = 5, price = 2}]',
     "tariff[1].blocks[1].to_m3: must be whole m3 from 0 to 1000000000 (only the last block is open-ended), "
     "got None"),
])
def test_more_bad_tables(text, error):
    with pytest.raises(TariffError) as exc:
        table(text)
    assert exc.value.errors[0] == error


def test_an_unreadable_file_says_so(tmp_path):
    with pytest.raises(TariffError, match="file not found"):
        load(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[[tariff]\n")
    with pytest.raises(TariffError, match="not valid TOML"):
        load(tmp_path / "bad.toml")


def test_the_gateway_config_checks_the_tariff_file(tmp_path):
    f = tmp_path / "tariff.toml"
    f.write_text(V2026.replace('"2.1000"', '"-2"'))
    gw = tmp_path / "gw.toml"
    gw.write_text(f'tariff_file = "{f}"\n')
    with pytest.raises(ConfigError) as exc:
        GatewayConfig.load(gw, env={})
    assert exc.value.errors == ["tariff_file: tariff[1].blocks[2].price: must be a price per m3 from 0 to 1000000 "
                                "with at most 6 decimals, such as \"1.20\", got '-2'"]
    assert GatewayConfig.load(overrides={"tariff_file": str(EXAMPLE)}, env={}).tariff_file == str(EXAMPLE)
    assert GatewayConfig().tariff_file == ""  # the default: no billing


def test_a_negative_consumption_is_refused(v2026):
    with pytest.raises(ValueError):
        compute_bill(v2026, -1)
