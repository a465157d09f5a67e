-- Group mode (kafka.group_mode: true; docs/operations.md): the partial
-- rows, one per (window, partition), written by whichever instance owns the
-- partition, with the partition's next offset as the version; and the view
-- that combines them into the columns of SPEC §6. StreamForge creates both
-- when create_table is true. Runs on ClickHouse 18.16 and current releases.

CREATE DATABASE IF NOT EXISTS streamforge;

CREATE TABLE IF NOT EXISTS `streamforge`.`order_metrics_partial`
(
    window_start DateTime,
    window_end   DateTime,
    partition    UInt32,
    order_cnt    UInt64,
    gmv_total    Decimal(38, 2),
    user_cnt     UInt64,
    version      UInt64,
    updated_at   DateTime
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(window_start)
ORDER BY (window_start, partition);

CREATE VIEW IF NOT EXISTS `streamforge`.`order_metrics_combined` AS SELECT window_start, any(window_end) AS window_end, sum(order_cnt) AS order_cnt, sum(gmv_total) AS gmv_total, sum(user_cnt) AS user_cnt, max(version) AS version, max(updated_at) AS updated_at FROM `streamforge`.`order_metrics_partial` FINAL GROUP BY window_start;
