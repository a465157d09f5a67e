-- StreamForge ClickHouse schema (SPEC section 6).
-- Must run unchanged on ClickHouse 18.16 (Debian package, used by the tests)
-- and on current releases (docker/docker-compose.yml mounts this file into
-- /docker-entrypoint-initdb.d/). One statement per `;`; no `;` inside comments.
-- Apply over HTTP one statement at a time, e.g. `scripts/stack.sh up` does it,
-- or: clickhouse-client --multiquery < sql/create_ck_table.sql
-- Readers must use FINAL (or argMax(..., version)): rows for one window_start
-- are replaced by the highest version only when parts merge.
-- gmv_total is Decimal(38, 2): a window's sum of valid amounts (each up to
-- 9999999999999999.99) can exceed Decimal(18, 2), which earlier versions
-- used. Such a table is refused at start with the statement that widens it:
--   ALTER TABLE streamforge.order_metrics MODIFY COLUMN gmv_total Decimal(38, 2)
-- On ClickHouse 22.2 and later, also run sql/dedup_window.sql (the sink adds
-- that setting itself to the tables it creates there).

CREATE DATABASE IF NOT EXISTS streamforge;

CREATE TABLE IF NOT EXISTS streamforge.order_metrics
(
    window_start DateTime,
    window_end   DateTime,
    order_cnt    UInt64,
    gmv_total    Decimal(38, 2),
    user_cnt     UInt64,
    version      UInt64,
    updated_at   DateTime
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(window_start)
ORDER BY window_start;
