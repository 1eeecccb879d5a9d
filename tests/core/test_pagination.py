"""Page tokens: they resume after the last key, refuse forgery and other filters,
and the keyset condition matches a plain sort on both databases."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select

from trellis.server.core.db import connect, upgrade_schema
from trellis.server.core.errors import InvalidArgument
from trellis.server.core.pagination import PageTokens, after_key, page_size, page_token_key


def test_a_token_round_trips_its_key_and_binds_its_scope() -> None:
    tokens = PageTokens(b"k" * 32)
    token = tokens.encode("runs:wf=ci", [1700, "r-9"])
    assert tokens.decode("runs:wf=ci", token) == (1700, "r-9")
    with pytest.raises(InvalidArgument, match="other filters"):
        tokens.decode("runs:wf=deploy", token)
    # The filters are kept as a digest: they may name users or labels.
    assert b"wf=ci" not in base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


@pytest.mark.parametrize("token", ["", "x", "not base64!", "AAAA" * 20])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument, match="not a token"):
        PageTokens(b"k" * 32).decode("s", token)


def test_a_token_from_another_key_or_altered_is_refused() -> None:
    token = PageTokens(b"a" * 32).encode("s", [5])
    with pytest.raises(InvalidArgument, match="not a token"):
        PageTokens(b"b" * 32).decode("s", token)
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(InvalidArgument, match="not a token"):
        PageTokens(b"a" * 32).decode("s", altered)


def test_page_size_defaults_clamps_and_refuses_negative() -> None:
    assert page_size(0, default=50, maximum=1000) == 50
    assert page_size(5000, default=50, maximum=1000) == 1000
    with pytest.raises(InvalidArgument):
        page_size(-1, default=50, maximum=1000)


def test_keyset_pages_walk_a_mixed_order_without_gaps(database_url: str) -> None:
    engine = create_engine(database_url)
    meta = MetaData()
    tbl = Table("t", meta, Column("a", Integer), Column("b", String(8)))
    meta.create_all(engine)
    # Unique keys, as every listing's sort key ends in a unique column.
    rows = [{"a": a, "b": b} for a in (3, 1, 2) for b in ("y", "x", "z")]
    with engine.begin() as conn:
        conn.execute(insert(tbl), rows)
    order = (tbl.c.a.desc(), tbl.c.b.asc())
    with engine.connect() as conn:
        expected = [tuple(r) for r in conn.execute(select(tbl.c.a, tbl.c.b).order_by(*order))]
        seen: list[tuple[int, str]] = []
        where = None
        while True:
            stmt = select(tbl.c.a, tbl.c.b).order_by(*order).limit(2)
            if where is not None:
                stmt = stmt.where(where)
            page = [(int(a), str(b)) for a, b in conn.execute(stmt)]
            if not page:
                break
            seen += page
            where = after_key([tbl.c.a, tbl.c.b], page[-1], descending=[True, False])
    engine.dispose()
    assert seen == expected


def test_every_replica_reads_the_one_key(database_url: str) -> None:
    first, second = connect(database_url), connect(database_url)
    try:
        upgrade_schema(first)
        with first.write() as conn:
            key = page_token_key(conn, 1)
        with second.write() as conn:
            assert page_token_key(conn, 2) == key
        assert len(key) == 32
    finally:
        first.dispose()
        second.dispose()
