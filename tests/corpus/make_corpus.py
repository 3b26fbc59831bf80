#!/usr/bin/env python3
"""Writes the bad-input corpus: tests/corpus/cases/* and tests/corpus/manifest.json.

Each case is a valid base file (base-settlement.dat, base-internal.csv,
base-accounts.jsonl, beside this script) with one fault put in by hand here,
and the rejection it must produce: the line and the field. The line and field
follow from the fault and the specs (settlement-file.md, accrual.md), not from
running the parsers. The files are committed; rerun this script after
changing a base file or a case, and review the diff.

    python3 tests/corpus/make_corpus.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
SETTLEMENT_KEY = "settlement/CORPUS/2026-11-20/{name}.dat"
INTERNAL_KEY = "internal/CORPUS/2026-11-20/{name}.csv"

# A line of 20 MiB without a line end: read in bounded pieces, never whole.
# Not committed as such: the case file holds the lines before it, and the
# manifest's `append` tells the test to add the bytes.
HUGE = 20 * 1024 * 1024


class Huge:
    def __init__(self, prefix: bytes, byte: str):
        self.prefix, self.byte = prefix, byte


def base_lines(name: str) -> list[bytes]:
    return (HERE / name).read_bytes().split(b"\n")[:-1]


def put(line: bytes, pos: int, text: bytes) -> bytes:
    """Overwrites 1-based position `pos` onwards with `text` (length kept)."""
    return line[: pos - 1] + text + line[pos - 1 + len(text):]


def settlement_cases() -> list[tuple[str, bytes, int, str, str]]:
    L = base_lines("base-settlement.dat")
    assert len(L) == 8 and all(len(x) == 200 for x in L), "base: header, 6 details, trailer"

    def edit(line_no: int, pos: int, text: bytes) -> bytes:
        out = list(L)
        out[line_no - 1] = put(out[line_no - 1], pos, text)
        return b"\n".join(out) + b"\n"

    def lines(out: list[bytes]) -> bytes:
        return b"\n".join(out) + b"\n"

    dup_id = L[1][9:33]
    return [
        # (name, bytes, line, field, why)
        ("s-empty", b"", 1, "record type", "an empty file has no header"),
        ("s-no-header", lines(L[1:]), 1, "record type", "the file starts with a detail"),
        ("s-no-trailer", lines(L[:-1]), 7, "record type", "the file ends after the last detail"),
        ("s-header-twice", lines(L[:1] + L[:1] + L[1:]), 2, "record type", "a second header"),
        ("s-detail-after-trailer", lines(L + [L[1]]), 9, "record type", "a record after the trailer"),
        ("s-short-record", lines(L[:2] + [L[2][:199]] + L[3:]), 3, "record", "199 bytes"),
        ("s-long-record", lines(L[:2] + [L[2] + b" "] + L[3:]), 3, "record", "201 bytes"),
        ("s-tab-byte", edit(4, 140, b"\t"), 4, "merchant name", "a byte outside 0x20-0x7E"),
        ("s-utf8-name", edit(4, 140, "é".encode()), 4, "merchant name", "UTF-8 where ASCII is required"),
        ("s-latin1-name", edit(5, 140, b"\xe9"), 5, "merchant name", "a Latin-1 byte (wrong encoding)"),
        ("s-blank-line", lines(L[:3] + [b""] + L[3:]), 4, "record", "a blank line"),
        ("s-truncated", lines(L[:4] + [L[4][:120]]), 5, "record", "the file stops inside a detail"),
        ("s-huge-line", Huge(lines(L[:2]), "D"), 3, "record", "a 20 MiB line without a line end"),
        ("s-format-version", edit(1, 44, b"002"), 1, "format version", "version 002"),
        ("s-creation-date", edit(1, 2, b"20261131"), 1, "creation date", "November 31st"),
        ("s-program-vs-key", edit(1, 16, b"OTHER "), 1, "program ID", "the header names another program than the key"),
        ("s-date-vs-key", edit(1, 26, b"20261121"), 1, "file date", "the header's date is not the key's"),
        ("s-sequence-gap", edit(4, 2, b"00000009"), 4, "record sequence", "3 is followed by 9"),
        ("s-amount-letter", edit(2, 81, b"00000000009918X"), 2, "amount", "a letter in an N field"),
        ("s-fee-space", edit(3, 97, b"0000000000 4240"), 3, "interchange fee", "a space in an N field"),
        ("s-leap-day", edit(3, 59, b"20250229"), 3, "transaction date", "29 February 2025 does not exist"),
        ("s-settlement-date", edit(6, 67, b"20261119"), 6, "settlement date", "not the header's file date"),
        ("s-amount-sign", edit(4, 96, b"X"), 4, "amount sign", "neither D nor C"),
        ("s-fee-sign", edit(5, 112, b"Z"), 5, "fee sign", "neither D nor C"),
        ("s-currency", edit(2, 78, b"ABC"), 2, "currency", "not an ISO 4217 code"),
        ("s-transaction-type", edit(3, 75, b"PUR"), 3, "transaction type", "not SAL, REF, REV or CBK"),
        ("s-full-pan", edit(2, 40, b"4111111111111111   "), 2, "masked PAN", "an unmasked PAN"),
        ("s-duplicate-id", edit(5, 10, dup_id), 5, "transaction ID", "the ID of line 2 again"),
        ("s-count", edit(8, 2, b"0000000007"), 8, "detail count", "7 where there are 6"),
        ("s-debit-total", edit(8, 12, b"000000000001297957"), 8, "debit total", "one minor unit off"),
        ("s-credit-total", edit(8, 30, b"000000000000484678"), 8, "credit total", "one minor unit off"),
        ("s-fee-total", edit(8, 48, b"000000000000020538"), 8, "fee total", "one minor unit off"),
    ]


def internal_cases() -> list[tuple[str, bytes, int, str, str]]:
    L = base_lines("base-internal.csv")
    assert len(L) == 7, "base: header and 6 rows"

    def row(line_no: int, col: int, value: str) -> bytes:
        out = [x.decode() for x in L]
        cells = out[line_no - 1].split(",")
        cells[col] = value
        out[line_no - 1] = ",".join(cells)
        return ("\n".join(out) + "\n").encode()

    def lines(out: list[bytes]) -> bytes:
        return b"\n".join(out) + b"\n"

    text = (b"\n".join(L) + b"\n").decode()
    return [
        ("i-empty", b"", 1, "header", "no header line"),
        ("i-wrong-header", lines([b"id,auth,pan,date,type,ccy,amount,sign"] + L[1:]), 1, "header", "other column names"),
        ("i-utf16", text.encode("utf-16"), 1, "header", "UTF-16 (wrong encoding)"),
        ("i-missing-column", lines(L[:2] + [L[2].rsplit(b",", 1)[0]] + L[3:]), 3, "row", "7 columns"),
        ("i-extra-column", lines(L[:2] + [L[2] + b",X"] + L[3:]), 3, "row", "9 columns"),
        ("i-blank-line", lines(L[:4] + [b""] + L[4:]), 5, "row", "a blank line"),
        ("i-amount-scale", row(2, 6, "4343.845"), 2, "amount", "3 decimals for USD"),
        ("i-amount-negative", row(3, 6, "-4321.59"), 3, "amount", "a sign in the amount"),
        ("i-amount-exponent", row(4, 6, "2.42773e3"), 4, "amount", "an exponent"),
        ("i-jpy-decimals", row(5, 5, "JPY"), 5, "amount", "1886.40 has decimals; JPY has none"),
        ("i-sign", row(6, 7, "X"), 6, "sign", "neither D nor C"),
        ("i-currency", row(7, 5, "ABC"), 7, "currency", "not an ISO 4217 code"),
        ("i-date", row(2, 3, "2026-02-30"), 2, "transaction_date", "30 February"),
        ("i-date-compact", row(3, 3, "20261118"), 3, "transaction_date", "not YYYY-MM-DD"),
        ("i-type", row(4, 4, "PUR"), 4, "transaction_type", "not SAL, REF, REV or CBK"),
        ("i-full-pan", row(5, 2, "4111111111111111"), 5, "masked_pan", "an unmasked PAN"),
        ("i-duplicate-id", row(6, 0, L[1].split(b",")[0].decode()), 6, "transaction_id", "the ID of line 2 again"),
        ("i-latin1", row(7, 1, "C6NR3\u00e9").decode().encode("latin-1"), 7, "auth_code", "a Latin-1 byte"),
        ("i-huge-line", Huge(lines(L[:3]), "X"), 4, "row", "a 20 MiB line without a line end"),
    ]


def accounts_cases() -> list[tuple[str, bytes, int, str | None, str]]:
    L = [json.loads(x) for x in base_lines("base-accounts.jsonl")]

    def with_(line_no: int, field: str, value) -> bytes:
        out = [dict(x) for x in L]
        if value is _DELETE:
            del out[line_no - 1][field]
        else:
            out[line_no - 1][field] = value
        return ("\n".join(json.dumps(x, separators=(",", ":")) for x in out) + "\n").encode()

    good = "\n".join(json.dumps(x, separators=(",", ":")) for x in L) + "\n"
    return [
        ("a-empty", b"", 0, None, "no accounts"),
        ("a-not-json", (good + "{\"account_id\": \n").encode(), 4, None, "a line that is not JSON"),
        ("a-latin1", good.replace("SAV-000003", "SAV-00000\u00e9").encode("latin-1"), 3, None, "a Latin-1 byte"),
        ("a-unknown-field", with_(2, "nickname", "x"), 2, None, "a field accrual.md does not define"),
        ("a-missing-balance", with_(2, "balance", _DELETE), 2, "balance", "no balance"),
        ("a-duplicate-id", with_(3, "account_id", "SAV-000001"), 3, "account_id", "the ID of line 1 again"),
        ("a-id-chars", with_(1, "account_id", "SAV 000001"), 1, "account_id", "a space in the ID"),
        ("a-product", with_(1, "product", "CHEQUE"), 1, "product", "not SAVINGS or LOAN"),
        ("a-status", with_(2, "status", "OPEN"), 2, "status", "not ACTIVE, DORMANT or CLOSED"),
        ("a-currency", with_(3, "currency", "ABC"), 3, "currency", "not an ISO 4217 code"),
        ("a-usd-scale", with_(1, "balance", "2500.001"), 1, "balance", "3 decimals for USD"),
        ("a-jpy-scale", with_(2, "balance", "1200000.5"), 2, "balance", "decimals for JPY"),
        ("a-bhd-scale", with_(3, "balance", "10.1255"), 3, "balance", "4 decimals for BHD"),
        ("a-balance-number", with_(1, "balance", 2500.0), 1, "balance", "a JSON number, not a decimal string"),
        ("a-rate-one", with_(1, "annual_rate", "1.0"), 1, "annual_rate", "rate must be below 1"),
        ("a-rate-negative", with_(2, "annual_rate", "-0.01"), 2, "annual_rate", "a negative rate"),
        ("a-day-count", with_(3, "day_count", "ACT/365"), 3, "day_count", "not one of the four conventions"),
        ("a-leap-day", with_(1, "opened_on", "2025-02-29"), 1, "opened_on", "29 February 2025 does not exist"),
        ("a-accrued-through", with_(2, "accrued_through", "yesterday"), 2, "accrued_through", "not a date"),
    ]


class _Delete:
    pass


_DELETE = _Delete()


def main() -> None:
    CASES.mkdir(exist_ok=True)
    for old in CASES.iterdir():
        old.unlink()
    manifest = []
    for kind, ext, cases in (("settlement", "dat", settlement_cases()),
                             ("internal", "csv", internal_cases()),
                             ("accounts", "jsonl", accounts_cases())):
        for name, data, line, field, why in cases:
            file = f"cases/{name}.{ext}"
            entry = {"name": name, "kind": kind, "file": file, "line": line, "field": field, "why": why}
            if isinstance(data, Huge):
                entry["append"] = {"byte": data.byte, "count": HUGE}
                data = data.prefix
            (HERE / file).write_bytes(data)
            if kind == "settlement":
                entry["key"] = SETTLEMENT_KEY.format(name=name)
            elif kind == "internal":
                entry["key"] = INTERNAL_KEY.format(name=name)
            manifest.append(entry)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(manifest)} cases in {CASES}")


if __name__ == "__main__":
    main()
