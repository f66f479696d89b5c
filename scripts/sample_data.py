"""A realistic multi-table sample database: customers, products, orders, line items, events, invoices.

Text, JSON, numerics, timestamps, a second schema, foreign keys, indexes, a view and a sequence.
``scale=1`` is about 2 MB; the benchmark uses ``scale`` ~ 600 for a database over 1 GB.

:func:`create_wide` makes the other shape the restore benchmark measures: two wide tables of text and JSON
(rows of ~1.5 KB, stored inline), about as large as the sample database at the same scale.
"""

from __future__ import annotations

from typing import Any

import psycopg

SCHEMA = """
CREATE SCHEMA billing;
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    country char(2) NOT NULL,
    created_at timestamptz NOT NULL,
    profile jsonb NOT NULL,
    deleted_at timestamptz
);
CREATE TABLE products (
    id serial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    title text NOT NULL,
    price numeric(10,2) NOT NULL,
    attributes jsonb NOT NULL
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers(id),
    status text NOT NULL,
    placed_at timestamptz NOT NULL,
    total numeric(12,2) NOT NULL,
    shipping_address jsonb NOT NULL
);
CREATE INDEX orders_customer_idx ON orders(customer_id, placed_at);
CREATE TABLE order_items (
    order_id bigint NOT NULL REFERENCES orders(id),
    line int NOT NULL,
    product_id int NOT NULL REFERENCES products(id),
    quantity int NOT NULL,
    unit_price numeric(10,2) NOT NULL,
    PRIMARY KEY (order_id, line)
);
CREATE TABLE events (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL,
    kind text NOT NULL,
    occurred_at timestamptz NOT NULL,
    payload jsonb NOT NULL
);
CREATE TABLE billing.invoices (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders(id),
    number text NOT NULL,
    issued_on date NOT NULL,
    amount numeric(12,2) NOT NULL,
    notes text
);
CREATE SEQUENCE billing.invoice_numbers START 1000;
CREATE VIEW customer_order_totals AS
    SELECT c.id, c.email, count(o.id) AS orders, coalesce(sum(o.total), 0) AS spent
    FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.email;
COMMENT ON TABLE events IS 'Product analytics events';
"""

_WORDS = "ARRAY['amber','basil','cedar','delta','ember','fjord','garnet','harbor','indigo','juniper'," \
         "'kestrel','lumen','meadow','nectar','onyx','prairie','quartz','raven','sierra','tundra']"


def _fill(scale: int) -> list[str]:
    customers, products, orders, events = 500 * scale, 200, 2000 * scale, 8000 * scale
    return [
        f"""INSERT INTO customers (email, name, country, created_at, profile, deleted_at)
        SELECT 'user' || g || '@example.' || (ARRAY['com','de','fr','nl'])[1 + g % 4],
               initcap(({_WORDS})[1 + g % 20]) || ' ' || initcap(({_WORDS})[1 + (g * 7) % 20]),
               (ARRAY['DE','FR','NL','IE','ES','IT','PL','SE'])[1 + g % 8],
               timestamptz '2024-01-01 00:00+00' + (g * interval '17 minutes'),
               jsonb_build_object('plan', (ARRAY['free','team','business'])[1 + g % 3],
                                  'newsletter', g % 3 = 0, 'tags', jsonb_build_array(({_WORDS})[1 + g % 20])),
               CASE WHEN g % 97 = 0 THEN timestamptz '2026-06-01 00:00+00' END
        FROM generate_series(1, {customers}) g""",
        f"""INSERT INTO products (sku, title, price, attributes)
        SELECT 'SKU-' || lpad(g::text, 6, '0'), initcap(({_WORDS})[1 + g % 20]) || ' ' || g,
               round((5 + (g * 37) % 500)::numeric + 0.99, 2),
               jsonb_build_object('color', ({_WORDS})[1 + g % 20], 'weight_g', 100 + g % 900)
        FROM generate_series(1, {products}) g""",
        f"""INSERT INTO orders (customer_id, status, placed_at, total, shipping_address)
        SELECT 1 + (g * 13) % {customers}, (ARRAY['paid','shipped','delivered','refunded'])[1 + g % 4],
               timestamptz '2025-01-01 00:00+00' + (g * interval '3 minutes'), round((g % 1000)::numeric + 0.5, 2),
               jsonb_build_object('street', g || ' ' || initcap(({_WORDS})[1 + g % 20]) || ' Street',
                                  'city', initcap(({_WORDS})[1 + (g * 3) % 20]),
                                  'postcode', lpad((g % 99999)::text, 5, '0'))
        FROM generate_series(1, {orders}) g""",
        f"""INSERT INTO order_items (order_id, line, product_id, quantity, unit_price)
        SELECT o, l, 1 + (o * l) % {products}, 1 + (o + l) % 5, round((3 + (o * l) % 200)::numeric + 0.25, 2)
        FROM generate_series(1, {orders}) o, generate_series(1, 3) l""",
        f"""INSERT INTO events (customer_id, kind, occurred_at, payload)
        SELECT 1 + g % {customers}, (ARRAY['login','view','search','checkout','logout'])[1 + g % 5],
               now() - (({events} - g) * interval '7 seconds'),  -- the newest event is current
               jsonb_build_object('session', md5(g::text), 'path', '/' || ({_WORDS})[1 + g % 20] || '/' || g,
                                  'agent', 'Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/' || (100 + g % 40),
                                  'query', ({_WORDS})[1 + (g * 11) % 20] || ' ' || ({_WORDS})[1 + (g * 5) % 20],
                                  'ms', g % 1500)
        FROM generate_series(1, {events}) g""",
        f"""INSERT INTO billing.invoices (order_id, number, issued_on, amount, notes)
        SELECT g, 'INV-' || nextval('billing.invoice_numbers'), date '2025-01-01' + g / 500,
               round((g % 1000)::numeric + 0.5, 2),
               CASE WHEN g % 5 = 0 THEN 'Paid by bank transfer, reference ' || md5(g::text) END
        FROM generate_series(1, {orders}) g WHERE g % 2 = 0""",
        "ANALYZE",
    ]


def create_sample(conn_kwargs: dict[str, Any], scale: int = 1) -> None:
    """Create the schema and rows in an existing, empty database."""
    with psycopg.connect(autocommit=True, **conn_kwargs) as conn:
        conn.execute(SCHEMA)
        for statement in _fill(scale):
            conn.execute(statement)


WIDE_SCHEMA = """
CREATE TABLE documents (
    id bigint PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    meta jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE audit_log (
    id bigint PRIMARY KEY,
    actor text NOT NULL,
    action text NOT NULL,
    payload jsonb NOT NULL,
    context text
);
"""
WIDE_ROWS = 1250  # rows per table per scale unit: ~3.7 MiB per unit (scale 360: ~1.3 GB)


def create_wide(conn_kwargs: dict[str, Any], scale: int = 1) -> None:
    """Two wide text/JSON tables in an existing, empty database; each row's text is hex digests and words
    (compressible about as much as real prose, not a repeated string), ~1.5 KB a row."""
    rows = WIDE_ROWS * scale
    with psycopg.connect(autocommit=True, **conn_kwargs) as conn:
        conn.execute(WIDE_SCHEMA)
        conn.execute(f"""INSERT INTO documents (id, title, body, meta, created_at)
            SELECT g, initcap(({_WORDS})[1 + g % 20]) || ' report ' || g,
                   (SELECT string_agg(md5(g::text || '.' || i) || ' ' || ({_WORDS})[1 + (g + i) % 20], ' ')
                    FROM generate_series(1, 28) i),
                   jsonb_build_object('author', ({_WORDS})[1 + g % 20], 'tags',
                                      jsonb_build_array(({_WORDS})[1 + g % 7], ({_WORDS})[1 + g % 13]),
                                      'checksum', md5(g::text), 'revision', g % 17,
                                      'summary', md5('s' || g) || md5('t' || g) || md5('u' || g)),
                   timestamptz '2024-01-01 00:00+00' + g * interval '1 minute'
            FROM generate_series(1, {rows}) g""")
        conn.execute(f"""INSERT INTO audit_log (id, actor, action, payload, context)
            SELECT g, 'user' || (g % 5000) || '@example.com',
                   (ARRAY['create','update','delete','share','export'])[1 + g % 5],
                   jsonb_build_object('request', md5('r' || g), 'path', '/' || ({_WORDS})[1 + g % 20] || '/' || g,
                                      'before', (SELECT jsonb_object_agg(({_WORDS})[1 + (g + i) % 20] || i,
                                                                         md5(g::text || 'b' || i))
                                                 FROM generate_series(1, 12) i),
                                      'after', (SELECT jsonb_object_agg(({_WORDS})[1 + (g * i) % 20] || i,
                                                                        md5(g::text || 'a' || i))
                                                FROM generate_series(1, 8) i)),
                   'session ' || md5('c' || g) || ' from ' || (g % 250) || '.' || (g % 199) || '.0.1'
            FROM generate_series(1, {rows}) g""")
        conn.execute("ANALYZE")
