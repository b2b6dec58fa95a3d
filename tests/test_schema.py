"""Schema introspection (t2s.db.introspect) and the schema formats (plugins/schema_format)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import requires_spider
from hydra.utils import instantiate
from omegaconf import OmegaConf
from t2s_plugins.schema_format.ddl import DDLFormat
from t2s_plugins.schema_format.markdown import MarkdownFormat
from t2s_plugins.schema_format.mschema import MSchemaFormat, mschema_examples

from t2s.db.introspect import SAMPLE_MAX_CHARS, connect_readonly, content_hash, introspect
from t2s.db.types import Column, DatabaseSchema, ForeignKey, Table
from t2s.stages import SchemaFormat

PROJECT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("T2S_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
SPIDER_DB = DATA / "spider" / "database"

ODD_DB = """
CREATE TABLE parent (a INTEGER, b TEXT, name varchar(20), PRIMARY KEY (a, b));
CREATE TABLE "Order Items" (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  "order" INT,
  "weird ""q"" col" "unsigned big int",
  untyped,
  pa INTEGER, pb TEXT,
  pic BLOB,
  note TEXT,
  FOREIGN KEY (pa, pb) REFERENCES parent,
  FOREIGN KEY ("order") REFERENCES ghost (id),
  FOREIGN KEY (note) REFERENCES PARENT (NAME)
);
INSERT INTO parent VALUES (1, 'x', 'first'), (2, 'y', NULL), (3, 'z', 'first');
INSERT INTO "Order Items" ("order", "weird ""q"" col", untyped, pa, pb, pic, note) VALUES
  (NULL, 1, '', 1, 'x', x'00ff', NULL),
  (7, 1, '   ', 2, 'y', x'0102', CAST(x'66ff6f' AS TEXT)),
  (8, 2, 'v', 3, 'z', NULL, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'),
  (9, 3, 'w', 1, 'x', NULL, 'short');
"""


@pytest.fixture
def odd_db(tmp_path: Path) -> Path:
    path = tmp_path / "odd.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(ODD_DB)
    conn.close()
    return path


# ---------------------------------------------------------------- introspection


def test_introspect_odd_database(odd_db: Path) -> None:
    s = introspect(str(odd_db), "odd", n_samples=3)
    assert [t.name for t in s.tables] == ["parent", "Order Items"]  # sqlite_sequence skipped
    parent, items = s.tables
    assert [(c.name, c.type, c.primary_key) for c in parent.columns] == [
        ("a", "INTEGER", True), ("b", "TEXT", True), ("name", "varchar(20)", False)]
    assert parent.column("name").samples == ["first"]  # distinct, NULL skipped
    assert [(c.name, c.type) for c in items.columns][:4] == [
        ("id", "INTEGER"), ("order", "INT"), ('weird "q" col', "unsigned big int"), ("untyped", "")]
    assert items.column("id").primary_key
    assert items.column("order").samples == [7, 8, 9]
    assert items.column('weird "q" col').samples == [1, 2, 3]
    assert items.column("untyped").samples == ["v", "w"]  # blank strings skipped
    assert items.column("pic").samples == []  # blobs are not samples
    note = items.column("note").samples
    assert note[0] == "f\ufffdo"  # invalid UTF-8 decoded with a replacement character
    assert note[1] == "a" * SAMPLE_MAX_CHARS + "..." and note[2] == "short"
    # implicit composite reference resolved to the parent's PK, case normalized, missing parent dropped
    assert s.foreign_keys == [
        ForeignKey("Order Items", "pa", "parent", "a"),
        ForeignKey("Order Items", "pb", "parent", "b"),
        ForeignKey("Order Items", "note", "parent", "name"),
    ]
    assert introspect(str(odd_db), "odd", n_samples=1).table("parent").column("a").samples == [1]
    assert all(c.samples == [] for t in introspect(str(odd_db), "odd", n_samples=0).tables for c in t.columns)


def test_introspect_is_read_only(odd_db: Path) -> None:
    before = (odd_db.stat().st_mtime_ns, content_hash(odd_db))
    introspect(str(odd_db), "odd")
    assert (odd_db.stat().st_mtime_ns, content_hash(odd_db)) == before
    conn = connect_readonly(odd_db)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("CREATE TABLE x (y)")
    with pytest.raises(FileNotFoundError, match="nope.sqlite"):
        introspect(str(odd_db.parent / "nope.sqlite"), "nope")
    (odd_db.parent / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError, match="junk.sqlite"):
        introspect(str(odd_db.parent / "junk.sqlite"), "junk")


def test_content_hash_is_sha256_and_tracks_changes(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert content_hash(f) == hashlib.sha256(b"abc").hexdigest()
    assert content_hash(str(f)) == content_hash(f)
    f.write_bytes(b"abcd")
    assert content_hash(f) == hashlib.sha256(b"abcd").hexdigest()
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        content_hash(tmp_path / "missing.bin")


def test_introspect_cache_keyed_by_content_and_samples(odd_db: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = introspect(str(odd_db), "odd", cache_dir=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].name.startswith(content_hash(odd_db))
    # a cache hit is served from the file: edit it and the edit shows
    d = json.loads(files[0].read_text())
    d["tables"][0]["columns"][0]["type"] = "FROM_CACHE"
    files[0].write_text(json.dumps(d))
    hit = introspect(str(odd_db), "other_id", cache_dir=cache)
    assert hit.tables[0].columns[0].type == "FROM_CACHE" and hit.db_id == "other_id"
    # another n_samples is another entry
    introspect(str(odd_db), "odd", n_samples=1, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    # a changed database is a new hash, so a fresh schema
    conn = sqlite3.connect(odd_db)
    conn.execute("CREATE TABLE added (z INT)")
    conn.commit()
    conn.close()
    fresh = introspect(str(odd_db), "odd", cache_dir=cache)
    assert fresh.table("added") is not None and fresh.tables[0].columns[0].type == "INTEGER"
    assert first.table("added") is None
    # an unreadable cache file is rebuilt, not trusted
    for f in cache.iterdir():
        f.write_text("{broken")
    assert introspect(str(odd_db), "odd", n_samples=1, cache_dir=cache).table("parent") is not None


def _spider_dev_db_ids() -> list[str]:
    dev = json.loads((DATA / "spider" / "dev.json").read_text())
    return sorted({r["db_id"] for r in dev if (SPIDER_DB / r["db_id"] / f"{r['db_id']}.sqlite").is_file()})


@requires_spider
def test_introspect_every_spider_database(tmp_path: Path) -> None:
    dev = _spider_dev_db_ids()
    assert len(dev) == 19
    paths = sorted(SPIDER_DB.glob("*/*.sqlite"))
    assert len(paths) >= 157  # 19 dev + 138 train databases
    fmt = DDLFormat()
    for p in paths:
        s = introspect(str(p), p.parent.name, cache_dir=tmp_path)
        assert s.tables, p
        for t in s.tables:
            assert t.columns and not t.name.startswith("sqlite_"), (p, t.name)
        for fk in s.foreign_keys:  # every kept reference names real columns
            assert s.table(fk.table).column(fk.column) and s.table(fk.ref_table).column(fk.ref_column), (p, fk)
        # the DDL serialization is valid SQLite that recreates the same tables and columns
        conn = sqlite3.connect(":memory:")
        conn.executescript(fmt.format(s))
        rebuilt = introspect_conn_tables(conn)
        assert rebuilt == {t.name: [c.name for c in t.columns] for t in s.tables}, p


def introspect_conn_tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY rowid")]
    return {n: [r[1] for r in conn.execute(f'PRAGMA table_info("{n}")')] for n in names}


@requires_spider
def test_concert_singer_foreign_keys() -> None:
    s = introspect(str(SPIDER_DB / "concert_singer" / "concert_singer.sqlite"), "concert_singer")
    assert [t.name for t in s.tables] == ["stadium", "singer", "concert", "singer_in_concert"]
    assert s.foreign_keys == [
        ForeignKey("concert", "Stadium_ID", "stadium", "Stadium_ID"),
        ForeignKey("singer_in_concert", "concert_ID", "concert", "concert_ID"),
        ForeignKey("singer_in_concert", "Singer_ID", "singer", "Singer_ID"),
    ]
    sic = s.table("singer_in_concert")
    assert [c.name for c in sic.columns if c.primary_key] == ["concert_ID", "Singer_ID"]
    assert s.table("singer").column("Name").samples == ["Joe Sharp", "Timbaland", "Justin Brown"]


# ---------------------------------------------------------------- formats

TINY = DatabaseSchema(
    db_id="tiny",
    tables=[
        Table("author", [
            Column("id", "INTEGER", True, [1, 2]),
            Column("full name", "VARCHAR(80)", False, ["O'Brien", "Ann Lee"], description="Author's name"),
            Column("order", "", False, []),
        ], description="People who write"),
        Table("book", [
            Column("book_id", "INT", True, [10]),
            Column("author_id", "INT", False, [1]),
            Column("title", "TEXT", False, ["A very long title that exceeds twenty chars", "B|C"]),
            Column("published", "DATE", False, ["2001-01-01", "2002-02-02"]),
            Column("price", "REAL", False, [9.5, 12.0, 3.25, 4.0]),
        ]),
    ],
    foreign_keys=[ForeignKey("book", "author_id", "author", "id")],
)

DDL_GOLDEN = """\
-- People who write
CREATE TABLE author (
  id INTEGER, -- examples: 1, 2
  "full name" VARCHAR(80), -- Author's name; examples: 'O''Brien', 'Ann Lee'
  "order",
  PRIMARY KEY (id)
);

CREATE TABLE book (
  book_id INT, -- examples: 10
  author_id INT, -- examples: 1
  title TEXT, -- examples: 'A very long title that exceeds twenty chars', 'B|C'
  published DATE, -- examples: '2001-01-01', '2002-02-02'
  price REAL, -- examples: 9.5, 12.0, 3.25
  PRIMARY KEY (book_id),
  FOREIGN KEY (author_id) REFERENCES author (id)
);"""

MARKDOWN_GOLDEN = """\
# Database: tiny

## Table: author
People who write

| column | type | key | description | examples |
| --- | --- | --- | --- | --- |
| id | INTEGER | PK | | 1, 2 |
| `full name` | VARCHAR(80) | | Author's name | 'O''Brien', 'Ann Lee' |
| order | | | | |

## Table: book

| column | type | key | examples |
| --- | --- | --- | --- |
| book_id | INT | PK | 10 |
| author_id | INT | FK | 1 |
| title | TEXT | | 'A very long title that exceeds twenty chars', 'B\\|C' |
| published | DATE | | '2001-01-01', '2002-02-02' |
| price | REAL | | 9.5, 12.0, 3.25 |

Foreign keys:
- book.author_id -> author.id"""

MSCHEMA_GOLDEN = """\
【DB_ID】 tiny
【Schema】
# Table: author, People who write
[
(id:INTEGER, Primary Key, Examples: [1, 2]),
(`full name`:VARCHAR, Author's name, Examples: [O'Brien, Ann Lee]),
(order:ANY)
]
# Table: book
[
(book_id:INT, Primary Key, Examples: [10]),
(author_id:INT, Examples: [1]),
(title:TEXT, Examples: [A very long title that exceeds twenty chars]),
(published:DATE, Examples: [2001-01-01]),
(price:REAL, Examples: [9.5, 12.0, 3.25])
]
【Foreign keys】
book.author_id=author.id"""


@pytest.mark.parametrize(("fmt", "golden"), [(DDLFormat(), DDL_GOLDEN), (MarkdownFormat(), MARKDOWN_GOLDEN),
                                             (MSchemaFormat(), MSCHEMA_GOLDEN)], ids=["ddl", "markdown", "mschema"])
def test_format_golden(fmt: SchemaFormat, golden: str) -> None:
    assert fmt.format(TINY) == golden
    assert fmt.format(TINY) == fmt.format(DatabaseSchema.from_dict(TINY.to_dict()))  # deterministic


def test_format_options() -> None:
    assert "examples" not in DDLFormat(include_samples=False).format(TINY)
    assert "Author's name" not in DDLFormat(include_descriptions=False).format(TINY)
    assert "'B|C'" not in DDLFormat(max_samples=1).format(TINY)
    md = MarkdownFormat(include_samples=False, include_descriptions=False).format(TINY)
    assert "| column | type | key |\n" in md and "examples" not in md and "People who write" not in md
    ms = MSchemaFormat(max_samples=1, type_detail=True).format(TINY)
    assert "(`full name`:VARCHAR(80), Author's name, Examples: [O'Brien])" in ms
    assert "Examples" not in MSchemaFormat(include_samples=False).format(TINY)
    no_fk = DatabaseSchema(db_id="t", tables=TINY.tables[:1])
    assert "【Foreign keys】" not in MSchemaFormat().format(no_fk) and "Foreign keys" not in MarkdownFormat().format(no_fk)
    for cls in (DDLFormat, MarkdownFormat, MSchemaFormat):
        with pytest.raises(ValueError, match="max_samples"):
            cls(max_samples=-1)


def test_mschema_example_rules() -> None:
    assert mschema_examples(["a", None, "b", "c", "d"], "TEXT", 3) == ["a", "b", "c"]
    assert mschema_examples(["x@y.com", "b"], "TEXT", 3) == []  # e-mail: none shown
    assert mschema_examples(["https://a.b", "b"], "TEXT", 3) == []
    assert mschema_examples(["2020-01-01 10:00", "2021-01-01"], "DATETIME", 3) == ["2020-01-01 10:00"]
    assert mschema_examples(["x" * 30, "b"], "TEXT", 3) == ["x" * 30]
    assert mschema_examples(["x" * 60, "b"], "TEXT", 3) == []
    assert mschema_examples([1, 2.5], "REAL", 0) == []


def test_formats_on_demo_database_and_view(tmp_path: Path) -> None:
    from t2s.data.demo import build_demo

    db = build_demo(tmp_path / "demo")["library"]
    s = introspect(str(db), "library")
    assert [(fk.table, fk.column, fk.ref_table) for fk in s.foreign_keys] == [
        ("books", "author_id", "authors"), ("loans", "book_id", "books"), ("loans", "member_id", "members")]
    for fmt in (DDLFormat(), MarkdownFormat(), MSchemaFormat()):
        text = fmt.format(s)
        assert all(t.name in text for t in s.tables)
        assert text == fmt.format(introspect(str(db), "library"))
    view = s.subset({"books": ["title"], "authors": None})
    ms = MSchemaFormat().format(view)
    assert "# Table: loans" not in ms and "books.author_id=authors.author_id" not in ms  # author_id not kept
    assert "(book_id:INTEGER, Primary Key" in ms and "(title:TEXT" in ms and "(pages" not in ms


@requires_spider
def test_formats_on_real_spider_database() -> None:
    s = introspect(str(SPIDER_DB / "orchestra" / "orchestra.sqlite"), "orchestra")
    ddl, md, ms = DDLFormat().format(s), MarkdownFormat().format(s), MSchemaFormat().format(s)
    assert '"Official_ratings_(millions)" REAL' in ddl
    assert "| `Official_ratings_(millions)` | REAL | | 5.2, 6.73, 7.28 |" in md
    assert "(`Official_ratings_(millions)`:REAL" in ms
    assert ms.startswith("【DB_ID】 orchestra\n【Schema】\n# Table: conductor\n[\n(Conductor_ID:INT, Primary Key")
    assert "performance.Orchestra_ID=orchestra.Orchestra_ID" in ms
    assert "FOREIGN KEY (Conductor_ID) REFERENCES conductor (Conductor_ID)" in ddl


@pytest.mark.parametrize("path", sorted((PROJECT / "conf" / "schema_format").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_schema_format_config_builds(path: Path) -> None:
    assert path.read_text().startswith("#")
    fmt = instantiate(OmegaConf.load(path))
    assert isinstance(fmt, SchemaFormat) and path.stem.startswith(fmt.name)  # variants: ddl_rows is a ddl
    assert fmt.format(TINY).strip()


def test_ddl_rows_shows_each_tables_first_rows(tmp_path: Path) -> None:
    import sqlite3

    from t2s.db.introspect import introspect

    db = tmp_path / "r.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, bio TEXT)")
    conn.executemany("INSERT INTO singer VALUES (?, ?, ?)", [(1, "Joe", "a\nb"), (2, "Ann", None), (3, "Bo", "x"), (4, "Z", "y")])
    conn.commit()
    conn.close()
    schema = introspect(str(db), "r", n_samples=0, n_rows=3, cache_dir=tmp_path / "cache")
    text = instantiate(OmegaConf.load(PROJECT / "conf" / "schema_format" / "ddl_rows.yaml")).format(schema)
    assert "/*\n3 example rows:\nSELECT * FROM singer LIMIT 3;\nid\tname\tbio\n1\tJoe\ta\\nb\n2\tAnn\tNULL\n3\tBo\tx\n*/" in text
    plain = instantiate(OmegaConf.load(PROJECT / "conf" / "schema_format" / "ddl_plain.yaml")).format(schema)
    assert "example rows" not in plain and "examples:" not in plain
    assert introspect(str(db), "r", n_samples=0, n_rows=0, cache_dir=tmp_path / "cache").tables[0].rows == []
