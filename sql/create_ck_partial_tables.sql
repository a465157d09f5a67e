-- Group mode (kafka.group_mode: true; docs/operations.md): the partial
-- rows, one per (window, partition), written by whichever instance owns the
-- partition, with the partition's next offset as the version; and the view
-- that combines them into the columns of SPEC §6. A partial row holds the
-- window's distinct users in that partition as 96-bit fingerprints, split
-- into users_hi and users_lo (element i of both is one user); the view
-- counts the union of the partitions' sets (uniqExactArray), exact however
-- users spread over partitions. user_cnt is the partition's own count:
-- SELECT window_start, sum(user_cnt) ... FROM <table>_partial FINAL GROUP BY
-- window_start is the fast path, exact only for a topic keyed by user_id.
-- StreamForge creates both when create_table is true. Runs on ClickHouse
-- 18.16 and current releases.

CREATE DATABASE IF NOT EXISTS streamforge;

CREATE TABLE IF NOT EXISTS `streamforge`.`order_metrics_partial`
(
    window_start DateTime,
    window_end   DateTime,
    partition    UInt32,
    order_cnt    UInt64,
    gmv_total    Decimal(38, 2),
    user_cnt     UInt64,
    users_hi     Array(UInt64),
    users_lo     Array(UInt32),
    version      UInt64,
    updated_at   DateTime
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(window_start)
ORDER BY (window_start, partition);

CREATE VIEW IF NOT EXISTS `streamforge`.`order_metrics_combined` AS SELECT window_start, any(window_end) AS window_end, sum(order_cnt) AS order_cnt, sum(gmv_total) AS gmv_total, uniqExactArray(users_hi, users_lo) AS user_cnt, max(version) AS version, max(updated_at) AS updated_at FROM `streamforge`.`order_metrics_partial` FINAL GROUP BY window_start;
