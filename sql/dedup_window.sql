-- ClickHouse 22.2 and later only (18.16 refuses the setting): lets the table
-- keep the insert_deduplication_token of its last 1000 inserts, so that an
-- INSERT StreamForge sends again with exactly the same rows (a resend after
-- a crash) is dropped by the server as well as absorbed by the versions.
-- StreamForge creates its tables with this setting on such servers and warns
-- (with this statement) about an existing table without it.
-- docker/docker-compose.yml runs it after sql/create_ck_table.sql.

ALTER TABLE streamforge.order_metrics MODIFY SETTING non_replicated_deduplication_window = 1000;
