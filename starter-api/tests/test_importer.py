"""``import-pxcodes``: TSV/CSV, header optional, upsert counts, --replace, bad files write nothing."""

from pathlib import Path

import pytest
from sqlalchemy import func, select

from starter import cli as cli_import
from starter.cli import import_pxcodes_command
from starter.db import db
from starter.importer import (
    ImportFileError,
    load_rows,
    parse_file,
    parse_text,
    sniff_delimiter,
)
from starter.models import PROCEDURE_MAX, PxCode

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture
def invoke():
    """Run ``import-pxcodes`` on an app (registered here until cli.py does it)."""

    def run(app, *args):
        app.cli.add_command(import_pxcodes_command)
        return app.test_cli_runner().invoke(args=["import-pxcodes", *map(str, args)])

    return run


def _write(tmp_path, name, content, encoding="utf-8"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding=encoding, newline="")
    return path


def _codes(app):
    with app.app_context():
        return dict(db.session.execute(select(PxCode.pxcode, PxCode.procedure)).all())


def _count(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(PxCode))


def _assert_one_line_error(result, *texts):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    for text in texts:
        assert text in lines[0], lines[0]
    assert "Traceback" not in result.output


# --- parsing (pure functions) ---------------------------------------------------------


def test_sniff_delimiter_by_extension_then_content():
    assert sniff_delimiter("a.tsv", "x,y") == "\t"
    assert sniff_delimiter("a.TAB", "x,y") == "\t"
    assert sniff_delimiter("a.csv", "x\ty") == ","
    assert sniff_delimiter("a.txt", "\n\n001\tA, B\n") == "\t"
    assert sniff_delimiter("a", "001,A\n") == ","


@pytest.mark.parametrize(
    "first",
    ["pxcode\tprocedure", "code\ttitle", "PXCODE\tPROCEDURE", "Code #\tWhat", "ms-drg\tdescription"],
)
def test_header_row_is_detected(first):
    rows, header, errors = parse_text(f"{first}\n001\tHEART\n", "\t")
    assert rows == [("001", "HEART")]
    assert header == first.split("\t")
    assert errors == []


def test_first_row_that_is_a_code_is_data():
    rows, header, errors = parse_text("CODE\tSomething real\n001\tHEART\n", "\t")
    assert header is None
    assert rows == [("CODE", "Something real"), ("001", "HEART")]


def test_parse_strips_cells_skips_blank_lines_and_trailing_empty_columns():
    text = " 001 \t  HEART TRANSPLANT  \r\n\r\n\t\n002\tKIDNEY\t\t\r\n"
    rows, header, errors = parse_text(text, "\t")
    assert (rows, header, errors) == ([("001", "HEART TRANSPLANT"), ("002", "KIDNEY")], None, [])


def test_csv_quoting_and_line_numbers_of_multiline_records():
    text = 'code,procedure\n001,"Bypass, Open ""Approach"""\n002,"two\nlines"\n003,\n004,ok\n'
    rows, header, errors = parse_text(text, ",")
    assert rows == [("001", 'Bypass, Open "Approach"'), ("004", "ok")]
    assert errors[0][0] == 3 and "control characters" in errors[0][1]
    assert errors[1] == (5, "procedure is empty")


def test_validation_uses_the_api_rules():
    text = "\n".join(
        [
            "001\tok",
            "0 1\tspace in code",
            "ABCDEFGHIJK\tcode too long",
            "-01\tstarts with a dash",
            "002\t" + "x" * (PROCEDURE_MAX + 1),
            "003",
            "004\tA\tB",
            "001\tduplicate",
            "005\tbell \x07 inside",
        ]
    )
    rows, header, errors = parse_text(text, "\t")
    assert rows == [("001", "ok")]
    assert [n for n, _ in errors] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "1 to 10 letters" in errors[0][1]
    assert f"at most {PROCEDURE_MAX}" in errors[3][1]
    assert "expected 2 columns" in errors[4][1] and "found 1" in errors[4][1]
    assert "found 3" in errors[5][1]
    assert errors[6][1] == "pxcode '001' already on line 1"
    assert "control characters" in errors[7][1]


def test_parse_file_reads_utf8_with_bom(tmp_path):
    path = _write(tmp_path, "codes.csv", "\ufeffpxcode,procedure\r\n001,Résection\r\n")
    parsed = parse_file(path)
    assert parsed.rows == [("001", "Résection")]
    assert parsed.delimiter == ","
    assert parsed.header == ["pxcode", "procedure"]


def test_parse_file_errors_name_the_first_lines(tmp_path):
    body = "".join(f"{i:03d}\t\n" for i in range(1, 9))
    with pytest.raises(ImportFileError) as info:
        parse_file(_write(tmp_path, "bad.tsv", body))
    message = str(info.value)
    assert "rejected 8 rows, nothing was imported" in message
    assert "line 1: procedure is empty" in message and "line 5:" in message
    assert "line 6:" not in message and "and 3 more" in message
    assert "\n" not in message


def test_load_rows_needs_no_cli(empty_app):
    with empty_app.app_context():
        result = load_rows([("001", "A"), ("002", "B")])
    assert (result.inserted, result.updated, result.unchanged) == (2, 0, 0)
    assert _codes(empty_app) == {"001": "A", "002": "B"}


# --- the command, on SQLite and PostgreSQL --------------------------------------------


def test_import_tsv_into_empty_table(empty_app, invoke, tmp_path):
    path = _write(tmp_path, "codes.tsv", "001\tHEART\n002\tLUNG, BOTH\n003\tLIVER\n")
    result = invoke(empty_app, path)
    assert result.exit_code == 0, result.output
    assert "inserted 3, updated 0, unchanged 0, rejected 0" in result.output
    assert _codes(empty_app) == {"001": "HEART", "002": "LUNG, BOTH", "003": "LIVER"}


def test_import_csv_with_header(empty_app, invoke, tmp_path):
    content = 'pxcode,procedure\n0016070,"Bypass Cerebral Ventricle, Open Approach"\n0016071,"Say ""hi"""\n'
    result = invoke(empty_app, _write(tmp_path, "codes.csv", content))
    assert result.exit_code == 0, result.output
    assert "inserted 2, updated 0, unchanged 0, rejected 0" in result.output
    assert "header row skipped: pxcode | procedure" in result.output
    assert _codes(empty_app) == {
        "0016070": "Bypass Cerebral Ventricle, Open Approach",
        "0016071": 'Say "hi"',
    }


def test_import_upserts_and_counts(app, invoke, tmp_path):
    before = _codes(app)
    assert before["039"] == "EXTRACRANIAL PROCEDURES W/O CC/MCC"
    content = (
        "code\tprocedure\n"
        f"039\t{before['039']}\n"  # unchanged
        f"057\t{before['057']}\n"  # unchanged
        "064\tA NEW TITLE\n"  # updated
        "0016070\tBypass Cerebral Ventricle to Nasopharynx\n"  # inserted
        "0016071\tBypass Cerebral Ventricle to Mastoid Sinus\n"  # inserted
    )
    result = invoke(app, _write(tmp_path, "codes.tsv", content))
    assert result.exit_code == 0, result.output
    assert "inserted 2, updated 1, unchanged 2, rejected 0" in result.output
    assert "deleted" not in result.output
    after = _codes(app)
    assert len(after) == 102
    assert after["064"] == "A NEW TITLE"
    assert after["0016071"] == "Bypass Cerebral Ventricle to Mastoid Sinus"
    # Importing the same file again changes nothing.
    again = invoke(app, tmp_path / "codes.tsv")
    assert "inserted 0, updated 0, unchanged 5, rejected 0" in again.output
    assert _codes(app) == after


def test_import_replace_makes_the_table_the_file(app, invoke, tmp_path):
    content = "039\tEXTRACRANIAL PROCEDURES W/O CC/MCC\n064\tCHANGED\n999\tNEW\n"
    result = invoke(app, _write(tmp_path, "codes.tsv", content), "--replace")
    assert result.exit_code == 0, result.output
    assert "inserted 1, updated 1, unchanged 1, rejected 0, deleted 98" in result.output
    assert _codes(app) == {
        "039": "EXTRACRANIAL PROCEDURES W/O CC/MCC",
        "064": "CHANGED",
        "999": "NEW",
    }


def test_import_replace_into_empty_table(empty_app, invoke, tmp_path):
    result = invoke(empty_app, _write(tmp_path, "codes.tsv", "001\tA\n"), "--replace")
    assert result.exit_code == 0, result.output
    assert "inserted 1, updated 0, unchanged 0, rejected 0, deleted 0" in result.output


def test_import_full_msdrg_file(app, invoke):
    result = invoke(app, DATA / "msdrg_full.tsv")
    assert result.exit_code == 0, result.output
    assert "inserted 651, updated 0, unchanged 100, rejected 0" in result.output
    assert _count(app) == 751


def test_bad_rows_are_reported_with_line_numbers_and_nothing_is_written(app, invoke, tmp_path):
    before = _codes(app)
    content = "039\tCHANGED\n0 1\tbad code\n555\tNEW\n556\t\n"
    result = invoke(app, _write(tmp_path, "codes.tsv", content), "--replace")
    _assert_one_line_error(
        result, "rejected 2 rows, nothing was imported", "line 2: pxcode '0 1'", "line 4: procedure is empty"
    )
    assert _codes(app) == before


def test_duplicate_codes_are_rejected(app, invoke, tmp_path):
    content = "pxcode,procedure\n100,A\n101,B\n100,C\n"
    result = invoke(app, _write(tmp_path, "dups.csv", content))
    _assert_one_line_error(result, "line 4: pxcode '100' already on line 2")
    assert _count(app) == 100


def test_extra_columns_are_rejected(empty_app, invoke, tmp_path):
    result = invoke(empty_app, _write(tmp_path, "three.csv", "001,A,extra\n"))
    _assert_one_line_error(result, "line 1: expected 2 columns (pxcode, procedure), found 3")
    assert _count(empty_app) == 0


@pytest.mark.parametrize("content", ["", "\n\n", "pxcode\tprocedure\n"])
def test_empty_file_is_an_error(app, invoke, tmp_path, content):
    result = invoke(app, _write(tmp_path, "empty.tsv", content), "--replace")
    _assert_one_line_error(result, "no codes in the file (nothing was imported)")
    assert _count(app) == 100


def test_non_utf8_file_is_an_error(empty_app, invoke, tmp_path):
    path = _write(tmp_path, "latin1.tsv", "001\tA\n002\tR\u00e9section\n", encoding="latin-1")
    result = invoke(empty_app, path)
    _assert_one_line_error(result, "line 2 is not UTF-8 (byte 0xe9 at column 6)")
    assert _count(empty_app) == 0


def test_bad_csv_quoting_is_an_error(empty_app, invoke, tmp_path):
    result = invoke(empty_app, _write(tmp_path, "q.csv", '001,A\n002,"B"x\n'))
    _assert_one_line_error(result, "line 2:", "nothing was imported")


@pytest.mark.parametrize("name", ["missing.tsv", "."])
def test_missing_file_or_directory_is_a_one_line_error(empty_app, invoke, tmp_path, name):
    result = invoke(empty_app, tmp_path / name)
    _assert_one_line_error(result, "cannot read")


def test_progress_bar_on_a_terminal(empty_app, invoke, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_import, "_is_terminal", lambda: True)
    result = invoke(empty_app, _write(tmp_path, "codes.tsv", "001\tA\n002\tB\n"))
    assert result.exit_code == 0, result.output
    assert "Importing" in result.output
    assert "inserted 2, updated 0, unchanged 0, rejected 0" in result.output


def test_database_refusal_is_one_line_and_rolls_back(app, invoke, tmp_path, monkeypatch):
    """A failure inside the write (here: the table is gone) leaves a one-line error."""
    with app.app_context():
        db.session.execute(db.text("DROP TABLE starter_pxcodes"))
        db.session.commit()
    result = invoke(app, _write(tmp_path, "codes.tsv", "001\tA\n"))
    _assert_one_line_error(result, "database error, nothing was imported")


def test_unreachable_database_is_one_line(make_app, invoke, tmp_path):
    app = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://nobody@127.0.0.1:1/none")
    result = invoke(app, _write(tmp_path, "codes.tsv", "001\tA\n"))
    _assert_one_line_error(result, "nothing was imported")


def test_a_no_op_import_keeps_the_data_version(app, invoke, tmp_path):
    """Only imports that change something move the version the caches are keyed by."""
    from starter import models

    def version():
        with app.app_context():
            return models.DataVersion.current()

    same = _write(tmp_path, "same.tsv", "039\tEXTRACRANIAL PROCEDURES W/O CC/MCC\n")
    before = version()
    assert "unchanged 1" in invoke(app, same).output
    assert version() == before
    changed = _write(tmp_path, "changed.tsv", "039\tNEW TITLE\n")
    assert "updated 1" in invoke(app, changed).output
    assert version() != before


def test_the_benchmark_generator_writes_an_importable_table(empty_app, invoke, tmp_path):
    """bench/gen_pxcodes.py (built-in vocabulary: no extra package) feeds the importer."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "bench" / "gen_pxcodes.py"
    out = tmp_path / "generated.tsv"
    for target in (out, tmp_path / "again.tsv"):
        subprocess.run(
            [sys.executable, script, "-n", "500", "--source", "words", target],
            check=True, capture_output=True, timeout=60,
        )
    assert out.read_bytes() == (tmp_path / "again.tsv").read_bytes()  # deterministic
    result = invoke(empty_app, out)
    assert result.exit_code == 0, result.output
    assert "inserted 500, updated 0, unchanged 0, rejected 0" in result.output
    assert all(len(code) == 7 for code in _codes(empty_app))
