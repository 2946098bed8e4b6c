"""The titles' words (PostgreSQL): a full-text index of them, and starter_pxcode_words for typos.

ix_starter_pxcodes_title_words indexes each title's lower-cased words (split at
every character that is no letter or digit) for prefix search
(``starter.search.TITLE_WORDS`` is its expression): all the words of a search are
looked up at once, where the trigram index would intersect the trigrams of common
words at length. No model declares it (an expression index; ``starter.db.UNMAPPED``).

One row per distinct lower-case word of the titles (runs of letters and digits)
with the number of its uses, kept by statement triggers on starter_pxcodes, and
a trigram index on it: a misspelt search word is compared with these few
thousand words (``starter.typos``), never with a million titles. SQLite has no
pg_trgm; there the service reads the words from the titles instead.

No model maps the table (``starter.db.UNMAPPED``): only the triggers write it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# "C" collation: byte order, so LIKE 'abc%' walks the primary key.
TABLE = """
CREATE TABLE starter_pxcode_words (
    word text COLLATE "C" PRIMARY KEY,
    uses bigint NOT NULL
)
"""
TITLE_WORDS_INDEX = (
    "CREATE INDEX ix_starter_pxcodes_title_words ON starter_pxcodes USING gin"
    " (to_tsvector('simple', regexp_replace(lower(procedure), '[^a-z0-9]+', ' ', 'g')))"
)
INDEXES = (
    "CREATE INDEX ix_starter_pxcode_words_trgm ON starter_pxcode_words USING gin (word gin_trgm_ops)",
    # The triggers delete the words no title uses any more: found without a scan.
    "CREATE INDEX ix_starter_pxcode_words_unused ON starter_pxcode_words (word) WHERE uses <= 0",
)
WORDS_OF = "regexp_split_to_table(lower({rows}.procedure), '[^a-z0-9]+')"
# Changes are summed per word and applied in word order, so concurrent writers
# lock the rows they share in the same order (no deadlock).
APPLY = """
INSERT INTO starter_pxcode_words AS w (word, uses)
SELECT word, sum(n) FROM ({changes}) AS c(word, n)
WHERE word <> '' GROUP BY word HAVING sum(n) <> 0 ORDER BY word
ON CONFLICT (word) DO UPDATE SET uses = w.uses + EXCLUDED.uses
"""
ADDED = f"SELECT {WORDS_OF.format(rows='new_rows')}, 1 FROM new_rows"
REMOVED = f"SELECT {WORDS_OF.format(rows='old_rows')}, -1 FROM old_rows"
FUNCTION = f"""
CREATE OR REPLACE FUNCTION starter_count_title_words() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE starter_pxcode_words;
        RETURN NULL;
    END IF;
    -- One branch per event: each names only the transition tables its event has.
    IF TG_OP = 'INSERT' THEN
        {APPLY.format(changes=ADDED)};
    ELSIF TG_OP = 'DELETE' THEN
        {APPLY.format(changes=REMOVED)};
    ELSE
        {APPLY.format(changes=ADDED + " UNION ALL " + REMOVED)};
    END IF;
    DELETE FROM starter_pxcode_words WHERE uses <= 0;
    RETURN NULL;
END
$$;
"""
TRIGGERS = {
    "insert": "AFTER INSERT ON starter_pxcodes REFERENCING NEW TABLE AS new_rows",
    "update": "AFTER UPDATE ON starter_pxcodes REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "AFTER DELETE ON starter_pxcodes REFERENCING OLD TABLE AS old_rows",
    "truncate": "AFTER TRUNCATE ON starter_pxcodes",
}
BACKFILL = APPLY.format(changes=f"SELECT {WORDS_OF.format(rows='starter_pxcodes')}, 1 FROM starter_pxcodes")


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    # createdb drops the mapped tables only: a table left from before is rebuilt.
    op.execute("DROP TABLE IF EXISTS starter_pxcode_words")
    op.execute("DROP INDEX IF EXISTS ix_starter_pxcodes_title_words")
    op.execute(TABLE)
    for index in INDEXES:
        op.execute(index)
    op.execute(FUNCTION)
    for event, when in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER starter_pxcodes_words_{event} {when}"
            " FOR EACH STATEMENT EXECUTE FUNCTION starter_count_title_words()"
        )
    op.execute(BACKFILL)
    op.execute(TITLE_WORDS_INDEX)


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for event in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS starter_pxcodes_words_{event} ON starter_pxcodes")
    op.execute("DROP FUNCTION IF EXISTS starter_count_title_words()")
    op.execute("DROP TABLE IF EXISTS starter_pxcode_words")
    op.execute("DROP INDEX IF EXISTS ix_starter_pxcodes_title_words")
