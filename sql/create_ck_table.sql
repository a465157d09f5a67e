-- StreamForge ClickHouse schema (SPEC section 6).
-- Must run unchanged on ClickHouse 18.16 (Debian package, used by the tests)
-- and on current releases (docker/docker-compose.yml mounts this file into
-- /docker-entrypoint-initdb.d/). One statement per `;`; no `;` inside comments.
-- Apply over HTTP one statement at a time, e.g. `scripts/stack.sh up` does it,
-- or: clickhouse-client --multiquery < sql/create_ck_table.sql
-- Readers must use FINAL (or argMax(..., version)): rows for one window_start
-- are replaced by the highest version only when parts merge.

CREATE DATABASE IF NOT EXISTS streamforge;

CREATE TABLE IF NOT EXISTS streamforge.order_metrics
(
    window_start DateTime,
    window_end   DateTime,
    order_cnt    UInt64,
    gmv_total    Decimal(18, 2),
    user_cnt     UInt64,
    version      UInt64,
    updated_at   DateTime
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(window_start)
ORDER BY window_start;
