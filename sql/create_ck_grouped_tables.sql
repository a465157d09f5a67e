-- StreamForge ClickHouse tables of grouped results (docs/semantics.md,
-- "Grouped results"): one per grouping of dimensions.groupings, named
-- <table>_by_<dimensions joined by _>. Same rules as sql/create_ck_table.sql:
-- runs unchanged on ClickHouse 18.16 and current releases, one statement
-- per `;`, readers use FINAL. The sink creates the tables of the configured
-- groupings itself when create_table is true. Rows with order_cnt = 0 are
-- retractions (a value pushed out of a window's limit by a late event):
-- filter them out, e.g. WHERE order_cnt > 0.

CREATE DATABASE IF NOT EXISTS streamforge;

CREATE TABLE IF NOT EXISTS streamforge.order_metrics_by_city
(
    window_start DateTime,
    window_end   DateTime,
    city         String,
    order_cnt    UInt64,
    gmv_total    Decimal(38, 2),
    user_cnt     UInt64,
    version      UInt64,
    updated_at   DateTime
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(window_start)
ORDER BY (window_start, city);

CREATE TABLE IF NOT EXISTS streamforge.order_metrics_by_category
(
    window_start DateTime,
    window_end   DateTime,
    category     String,
    order_cnt    UInt64,
    gmv_total    Decimal(38, 2),
    user_cnt     UInt64,
    version      UInt64,
    updated_at   DateTime
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(window_start)
ORDER BY (window_start, category);

CREATE TABLE IF NOT EXISTS streamforge.order_metrics_by_city_category
(
    window_start DateTime,
    window_end   DateTime,
    city         String,
    category     String,
    order_cnt    UInt64,
    gmv_total    Decimal(38, 2),
    user_cnt     UInt64,
    version      UInt64,
    updated_at   DateTime
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(window_start)
ORDER BY (window_start, city, category);
