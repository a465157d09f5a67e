//! The ClickHouse sink: window rows upserted into the table of SPEC §6
//! over ClickHouse's HTTP interface.
//!
//! # Layout
//!
//! * `settings`: the settings file, environment overrides, the password
//!   (a [`Secret`]).
//! * `client`: requests, the HTTP transport, answers (including an
//!   exception streamed after a 200), failures worded for the operator.
//! * `error`: the typed [`ClickHouseError`], its [`ErrorKind`] and
//!   [`RetryClass`], and the ClickHouse error-code tables behind them.
//! * `encode`: rows to `JSONEachRow` and back from `TabSeparated`, what the
//!   table can hold, the content-derived deduplication token.
//! * `schema`: the DDL, the SQL of every read, the schema check.
//! * `profile`: what the server knows, and the settings pinned because of it.
//! * this file: [`ClickHouseSink`], which puts them together.
//!
//! # A write
//!
//! On first contact the sink probes the server once (version, known
//! settings) and checks the table (creating it if allowed). Each batch is
//! then one INSERT with `wait_end_of_query=1`, the semantics-changing
//! settings pinned, and, on servers that have it, an
//! `insert_deduplication_token` derived from the body. Rows the table cannot
//! hold are not sent; if ClickHouse still refuses a batch for its data, the
//! sink checks that the table is SPEC §6's (if not, the table is at fault:
//! fatal), then halves the batch until the rows at fault are alone, writes
//! each of them to the dead-letter file (`sink::dead_letters`) and
//! acknowledges the rest. Grouped rows (`grouped`) go the same way, one
//! INSERT per grouped table, checked against their own DDL after a data
//! refusal. Only what an operator must fix (credentials,
//! permissions, the table's schema, settings the profile forbids) stops the
//! job; everything that may pass is retried by the writer with backoff.
//!
//! # Compatibility
//!
//! The SQL runs unchanged on ClickHouse 18.16 (Debian's package, used by the
//! tests) and on current releases (`tests/chdb_compat.rs` runs this very
//! sink on the 26.9 engine); docs/stack.md lists the differences and how
//! each is absorbed.

mod client;
mod encode;
mod error;
mod grouped;
mod partial;
mod profile;
mod schema;
mod settings;

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::blocking::Client as HttpClient;

use super::dead_letters::{DeadLetter, DeadLetterLog};
use super::{Sink, SinkError};
use crate::window::WindowRow;
use client::{Client, Target};

pub use client::{HttpTransport, Request, Response, Transport};
pub use encode::{MAX_DATETIME, MAX_GMV_CENTS};
pub use error::{ClickHouseError, ErrorKind, Failure, RetryClass};
pub use profile::ServerProfile;
pub use schema::{COLUMNS, DEDUP_WINDOW, ENGINE, OLD_GMV_TYPE};
pub use settings::{validate_name, ClickHouseSettings};

/// Writes window rows to one ClickHouse table.
pub struct ClickHouseSink {
    client: Client,
    database: String,
    table: String,
    create_table: bool,
    has_password: bool,
    /// Probed once, on first contact (the server may be down at start).
    profile: OnceLock<ServerProfile>,
    /// Set once `ensure_schema` succeeded: a job may start while ClickHouse
    /// is down, and then checks the table before its first write.
    schema_ok: bool,
    /// Rows the table cannot hold are kept back (off only in tests of the
    /// server's own refusals).
    check_rows: bool,
    dead_letters: DeadLetterLog,
    /// The configured groupings: a table each (`grouped`).
    groupings: Vec<Vec<crate::dims::Dimension>>,
    /// Group mode (`partial`): reads give the combined figures.
    group_mode: bool,
    /// Group mode, writing: the partition whose partial rows this sink
    /// writes.
    partition: Option<u32>,
}

impl fmt::Debug for ClickHouseSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseSink")
            .field("server", &self.client.target.server)
            .field("database", &self.database)
            .field("table", &self.table)
            .field("user", &self.client.target.user)
            .field("password", &self.has_password.then_some("<redacted>"))
            .field("create_table", &self.create_table)
            .field("dead_letter_log", &self.dead_letters.path())
            .finish()
    }
}

/// The table a batch of rows goes to.
#[derive(Debug, Clone, Copy)]
enum Dest<'a> {
    /// The totals' table (SPEC §6).
    Totals,
    /// The table of the grouping with these dimensions.
    Grouped(&'a [crate::dims::Dimension]),
}

/// How one write is going, while a refused batch is being split.
#[derive(Default)]
struct Split {
    /// The tables (`database.table`) checked after a data refusal and found
    /// to be the ones StreamForge writes.
    confirmed: Vec<String>,
    /// Rows refused, for the dead-letter file.
    refused: Vec<DeadLetter>,
}

impl ClickHouseSink {
    /// Builds the client. Validates the settings and reads the password and
    /// CA file, but does not contact the server.
    pub fn connect(settings: &ClickHouseSettings) -> Result<Self, SinkError> {
        Self::connect_with_env(settings, |var| std::env::var(var).ok())
    }

    fn connect_with_env(
        settings: &ClickHouseSettings,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SinkError> {
        let config_error =
            |problem: String| SinkError::Fatal(format!("ClickHouse settings: {problem}"));
        settings
            .validate()
            .map_err(|problems| config_error(problems.join("; ")))?;
        let url = settings::parse_url(&settings.url).map_err(config_error)?;
        let password = settings::resolve_password(settings, lookup).map_err(config_error)?;
        let client = http_client(settings, &url).map_err(config_error)?;
        let has_password = password.is_some();
        let transport = HttpTransport::new(client, url, settings.user.clone(), password);
        let mut sink = Self::with_transport(settings, Box::new(transport))?;
        sink.has_password = has_password;
        Ok(sink)
    }

    /// A sink that sends its requests through `transport` (the HTTP one in
    /// production; the compatibility test drives current ClickHouse
    /// in-process with its own).
    pub fn with_transport(
        settings: &ClickHouseSettings,
        transport: Box<dyn Transport>,
    ) -> Result<Self, SinkError> {
        settings.validate().map_err(|problems| {
            SinkError::Fatal(format!("ClickHouse settings: {}", problems.join("; ")))
        })?;
        let target = Target {
            server: transport.describe(),
            database: settings.database.clone(),
            table: settings.table.clone(),
            user: settings.user.clone(),
            password_source: settings::password_source(settings),
            timeout: settings.timeout.0,
        };
        Ok(ClickHouseSink {
            client: Client::new(transport, target),
            database: settings.database.clone(),
            table: settings.table.clone(),
            create_table: settings.create_table,
            has_password: false,
            profile: OnceLock::new(),
            schema_ok: false,
            check_rows: true,
            dead_letters: DeadLetterLog::new(settings.dead_letter_log.clone()),
            groupings: Vec::new(),
            group_mode: false,
            partition: None,
        })
    }

    /// Writes and reads the grouped rows of `groupings` too, a table each
    /// (created with the totals' table, see `grouped`).
    pub fn set_groupings(&mut self, groupings: Vec<Vec<crate::dims::Dimension>>) {
        self.groupings = groupings;
    }

    /// Group mode (see `partial`): writes go to `<table>_partial` as the
    /// partial rows of `partition` (`None`: a reader only), reads give the
    /// combined figures.
    pub fn set_group_mode(&mut self, partition: Option<u32>) {
        self.group_mode = true;
        self.partition = partition;
    }

    /// Skips the schema check before the first write (tests of the insert
    /// path itself).
    #[doc(hidden)]
    pub fn assume_schema_checked(&mut self) {
        self.schema_ok = true;
    }

    /// Sends rows the table cannot hold instead of keeping them back
    /// (tests of how the sink handles the server's own refusals).
    #[doc(hidden)]
    pub fn send_rows_unchecked(&mut self) {
        self.check_rows = false;
    }

    /// Checks (or creates) the table now if ClickHouse answers; if it is
    /// down, leaves the check to the first write and says so. Only a wrong
    /// schema, bad credentials or settings are errors here.
    pub fn prepare(&mut self) -> Result<(), SinkError> {
        match self.ensure_schema() {
            Ok(()) => {
                self.schema_ok = true;
                Ok(())
            }
            Err(SinkError::Retryable(e)) => {
                tracing::warn!(
                    error = %e,
                    "ClickHouse is not reachable at start-up; the table is checked before the first write. \
                     A job resuming a checkpoint reads on and keeps its output pending; a fresh state \
                     waits for ClickHouse before reading"
                );
                Ok(())
            }
            Err(fatal) => Err(fatal),
        }
    }

    /// The table as `database.table`.
    pub fn table_name(&self) -> String {
        self.client.target.table_name()
    }

    /// What the server knows, once probed.
    pub fn server_profile(&self) -> Option<&ServerProfile> {
        self.profile.get()
    }

    /// The `CREATE TABLE` statement of SPEC §6 for the configured table, as
    /// every server accepts it (sql/create_ck_table.sql). On servers that
    /// know it, the sink adds the deduplication window (`schema::ddl`).
    pub fn ddl(settings: &ClickHouseSettings) -> String {
        schema::ddl(&settings.database, &settings.table, None)
    }

    /// Probes the server once: its version and the settings it knows.
    fn profile(&self) -> Result<&ServerProfile, SinkError> {
        if let Some(profile) = self.profile.get() {
            return Ok(profile);
        }
        let action = "probing the server's version and settings";
        let run = |sql: String| self.client.run(action, &Request::statement(sql));
        let version = run(profile::VERSION_SQL.to_string())?;
        let settings = run(profile::settings_sql())?;
        let merge_tree = run(profile::merge_tree_sql())?;
        let profile = ServerProfile::parse(&version, &settings, &merge_tree)
            .map_err(|detail| self.bad_answer(action, detail))?;
        tracing::info!(server = %self.client.target.server, table = %self.table_name(), "{}", profile.summary());
        Ok(self.profile.get_or_init(|| profile))
    }

    fn bad_answer(&self, action: &str, detail: String) -> SinkError {
        let failure = Failure {
            kind: ErrorKind::BadAnswer,
            code: None,
            detail,
        };
        self.client.error(action, failure).into()
    }

    /// A read whose answer the sink parses, with the read settings pinned.
    fn read_request(&self, sql: String) -> Request {
        Request {
            settings: self
                .profile
                .get()
                .map(ServerProfile::read_settings)
                .unwrap_or_default(),
            ..Request::statement(sql)
        }
    }

    fn read(&self, action: &str, sql: String) -> Result<String, SinkError> {
        Ok(self.client.run(action, &self.read_request(sql))?)
    }

    /// Creates the database and the table when missing (if `create_table`),
    /// then checks that the table's columns, engine, sorting key and
    /// partition key are those of SPEC §6. A mismatch is fatal and says
    /// what differs and what to do.
    pub fn ensure_schema(&self) -> Result<(), SinkError> {
        let profile = self.profile()?;
        let mut info = self.table_info()?;
        if info.is_none() && self.create_table {
            self.create(profile)?;
            info = self.table_info()?;
        }
        let Some(info) = info else {
            return Err(SinkError::Fatal(format!(
                "ClickHouse {}: table {} does not exist{}. Set `create_table: true` in the ClickHouse settings \
                 so StreamForge creates it, or create it with sql/create_ck_table.sql",
                self.client.target.server,
                self.table_name(),
                if self.create_table { " even after creating it" } else { " and create_table is false" }
            )));
        };
        if info.needs_gmv_migration() {
            return Err(SinkError::Fatal(format!(
                "ClickHouse {}: table {} has gmv_total {OLD_GMV_TYPE}, which a window's sum of valid amounts can \
                 exceed (SPEC §6 says Decimal(38, 2)). Widen the column, which keeps every row, then restart: \
                 {}. StreamForge does not alter tables itself (docs/operations.md says why)",
                self.client.target.server,
                self.table_name(),
                schema::migrate_gmv_sql(&self.database, &self.table)
            )));
        }
        let problems = schema::schema_problems(&info);
        if !problems.is_empty() {
            return Err(self.not_spec_table(&problems));
        }
        if profile.dedup_window && info.lacks_dedup_window() {
            tracing::warn!(
                table = %self.table_name(),
                statement = %schema::dedup_window_sql(&self.database, &self.table),
                "the table keeps no insert deduplication tokens, so the defence in depth they add is off \
                 (versions still make writes idempotent); run the statement to turn it on"
            );
        }
        if self.group_mode {
            self.ensure_partial_table()?;
        }
        self.ensure_grouped_tables()
    }

    fn not_spec_table(&self, problems: &[String]) -> SinkError {
        SinkError::Fatal(format!(
            "ClickHouse {}: table {} exists but is not the table StreamForge writes (SPEC §6): {}. \
             StreamForge does not alter or drop tables: rename or drop this one (e.g. RENAME TABLE {} TO {}_old) \
             and let StreamForge create it, or set `table` to a new name. The expected DDL is in \
             sql/create_ck_table.sql",
            self.client.target.server,
            self.table_name(),
            problems.join("; "),
            self.table_name(),
            self.table_name()
        ))
    }

    fn create(&self, profile: &ServerProfile) -> Result<(), SinkError> {
        let action = "creating the table";
        let ddl = |sql: String| Request {
            settings: profile.ddl_settings(),
            ..Request::statement(sql)
        };
        let databases = self.read(action, schema::databases_sql(&self.database))?;
        if databases.trim().is_empty() {
            let sql = schema::create_database_sql(&self.database);
            self.client.run(action, &ddl(sql))?;
            tracing::info!(server = %self.client.target.server, database = %self.database, "created the ClickHouse database");
        }
        let window = profile.dedup_window.then_some(DEDUP_WINDOW);
        let sql = schema::ddl(&self.database, &self.table, window);
        self.client.run(action, &ddl(sql))?;
        tracing::info!(server = %self.client.target.server, table = %self.table_name(), "created the ClickHouse table");
        Ok(())
    }

    /// The table's engine, keys and columns, or `None` if it does not exist.
    fn table_info(&self) -> Result<Option<schema::TableInfo>, SinkError> {
        self.table_info_of(&self.table)
    }

    /// [`Self::table_info`] of the table `table` of the database.
    fn table_info_of(&self, table: &str) -> Result<Option<schema::TableInfo>, SinkError> {
        let action = "checking the table's schema";
        let tables = self.read(action, schema::tables_sql(&self.database, table))?;
        if tables.trim().is_empty() {
            return Ok(None);
        }
        let columns = self.read(action, schema::columns_sql(&self.database, table))?;
        schema::TableInfo::parse(&tables, &columns)
            .map_err(|detail| self.bad_answer(action, detail))
    }

    /// Probes and checks the table once, before the first write.
    fn ensure_ready(&mut self) -> Result<(), SinkError> {
        if !self.schema_ok {
            self.ensure_schema()?;
            self.schema_ok = true;
        }
        self.profile().map(drop)
    }

    /// No rows read outside group mode: if a group wrote this table, its
    /// rows are in `<table>_partial`, which only group mode reads.
    fn hint_group_mode(&self) -> Result<(), SinkError> {
        let partial = partial::table(&self.table);
        let found = self.read(
            "looking for group mode's partial rows",
            schema::tables_sql(&self.database, &partial),
        )?;
        if !found.trim().is_empty() {
            tracing::warn!(
                table = %self.table_name(),
                "no rows, but {partial} exists: a consumer group in group mode wrote these results; \
                 read them with the group's configuration, or with --set kafka.group_mode=true"
            );
        }
        Ok(())
    }

    /// Runs `sql` (the request body) as is and returns the answer as text.
    pub fn query_text(&self, sql: &str) -> Result<String, SinkError> {
        Ok(self
            .client
            .run("query", &Request::statement(sql.to_string()))?)
    }

    /// Empties the table (tests, replays).
    pub fn truncate(&self) -> Result<(), SinkError> {
        let sql = format!(
            "TRUNCATE TABLE {}",
            schema::quoted(&self.database, &self.table)
        );
        Ok(self
            .client
            .run("truncating the table", &Request::statement(sql))
            .map(drop)?)
    }

    /// Drops the table, the grouped tables of the groupings set and, in
    /// group mode, the partial rows' table and its view, if they exist
    /// (tests, replays).
    pub fn drop_table(&self) -> Result<(), SinkError> {
        let mut tables = vec![self.table.clone()];
        tables.extend(
            self.groupings
                .iter()
                .map(|g| grouped::table(&self.table, g)),
        );
        if self.group_mode {
            tables.push(partial::view(&self.table));
            tables.push(partial::table(&self.table));
        }
        for table in tables {
            let sql = format!(
                "DROP TABLE IF EXISTS {}",
                schema::quoted(&self.database, &table)
            );
            self.client
                .run("dropping the table", &Request::statement(sql))?;
        }
        Ok(())
    }

    /// One INSERT of `body`, exactly as [`Sink::write`] sends its rows: the
    /// same statement, pinned settings and deduplication token. Public for
    /// the compatibility test, which sends hand-made bodies through it to
    /// show how each engine reads them; the sink must have reached the
    /// server once (`prepare`, `ensure_schema` or a write).
    #[doc(hidden)]
    pub fn insert_body(&self, action: &str, body: String) -> Result<(), ClickHouseError> {
        let profile = self
            .profile
            .get()
            .expect("an INSERT is sent only after the server was probed (ensure_ready)");
        let settings = profile.insert_settings(|| encode::dedup_token(&self.table_name(), &body));
        let request = Request {
            query: Some(schema::insert_sql(&self.database, &self.table)),
            settings,
            body,
        };
        self.client.run(action, &request).map(drop)
    }

    fn insert(&self, dest: Dest<'_>, rows: &[&WindowRow]) -> Result<(), ClickHouseError> {
        let action = match rows.len() {
            1 => "inserting 1 row".to_string(),
            n => format!("inserting {n} rows"),
        };
        match dest {
            Dest::Totals => self.insert_body(&action, encode::encode_rows(rows.iter().copied())),
            Dest::Grouped(dims) => self.insert_grouped_body(dims, &action, rows),
        }
    }

    /// `database.table` of the table `dest` names.
    fn dest_name(&self, dest: Dest<'_>) -> String {
        match dest {
            Dest::Totals => self.table_name(),
            Dest::Grouped(dims) => {
                format!("{}.{}", self.database, grouped::table(&self.table, dims))
            }
        }
    }

    /// Inserts `rows` into `dest`; when ClickHouse refuses them for their
    /// data (or for spanning too many partitions), inserts each half the
    /// same way, down to single rows, which then go to the dead letters.
    fn insert_or_split(
        &self,
        dest: Dest<'_>,
        rows: &[&WindowRow],
        split: &mut Split,
    ) -> Result<(), SinkError> {
        let refused = match self.insert(dest, rows) {
            Ok(()) => return Ok(()),
            Err(e) if e.retry_class() == RetryClass::Split => e,
            Err(e) => return Err(e.into()),
        };
        if refused.kind == ErrorKind::Data && !split.confirmed.contains(&self.dest_name(dest)) {
            self.confirm_rows_at_fault(dest, &refused)?;
            split.confirmed.push(self.dest_name(dest));
            tracing::warn!(table = %self.dest_name(dest), rows = rows.len(), error = %refused.detail,
                "ClickHouse refused a batch for its data; inserting it by halves to find the rows at fault");
        }
        match rows {
            [row] if refused.kind == ErrorKind::Data => {
                split.refused.push(DeadLetter {
                    table: self.dest_name(dest),
                    row: (*row).clone(),
                    error: refused.detail,
                });
                Ok(())
            }
            [_] => Err(refused.into()),
            _ => {
                let (left, right) = rows.split_at(rows.len() / 2);
                self.insert_or_split(dest, left, split)?;
                self.insert_or_split(dest, right, split)
            }
        }
    }

    /// After a data refusal: the rows are at fault only if the table is the
    /// one SPEC §6 describes (or, for a grouped table, the one
    /// sql/create_ck_grouped_tables.sql describes). If it is not, the
    /// refusal is fatal.
    fn confirm_rows_at_fault(
        &self,
        dest: Dest<'_>,
        refused: &ClickHouseError,
    ) -> Result<(), SinkError> {
        let (table, ddl_file) = match dest {
            Dest::Totals => (self.table.clone(), "sql/create_ck_table.sql"),
            Dest::Grouped(dims) => (
                grouped::table(&self.table, dims),
                "sql/create_ck_grouped_tables.sql",
            ),
        };
        let problems = match (self.table_info_of(&table)?, dest) {
            (Some(info), Dest::Totals) => schema::schema_problems(&info),
            (Some(info), Dest::Grouped(dims)) => grouped::schema_problems(&info, dims),
            (None, _) => vec!["the table no longer exists".to_string()],
        };
        if problems.is_empty() {
            return Ok(());
        }
        Err(SinkError::Fatal(format!(
            "{}. The table is not the one StreamForge writes, so the table is at fault, not the rows: {}. \
             Compare `SHOW CREATE TABLE {}` with {ddl_file}",
            refused.message,
            problems.join("; "),
            self.dest_name(dest)
        )))
    }

    /// Writes the refused rows to the dead-letter file, durably.
    fn record_dead_letters(&mut self, refused: &[DeadLetter]) -> Result<(), SinkError> {
        self.dead_letters.record(refused).map(drop).map_err(|e| {
            SinkError::Retryable(format!(
                "cannot write {} refused row(s) of table {} to the dead-letter file {}: {e}. Free space or \
                 fix the permissions, or point `dead_letter_log` in the ClickHouse settings elsewhere \
                 (retryable)",
                refused.len(),
                self.table_name(),
                self.dead_letters.path().display()
            ))
        })
    }
}

/// The HTTP client the settings describe.
fn http_client(settings: &ClickHouseSettings, url: &reqwest::Url) -> Result<HttpClient, String> {
    let mut builder = HttpClient::builder()
        .timeout(settings.timeout.0)
        .connect_timeout(settings.connect_timeout.0)
        // Below ClickHouse's keep_alive_timeout (3 s by default), so a
        // pooled connection is not reused just as the server closes it.
        .pool_idle_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("streamforge/", env!("CARGO_PKG_VERSION")));
    if let Some(ca_file) = &settings.ca_file {
        let pem = std::fs::read(ca_file)
            .map_err(|e| format!("cannot read ca_file {}: {e}", ca_file.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {} is not PEM: {e}", ca_file.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "ca_file {} holds no certificate",
                ca_file.display()
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if settings.insecure_skip_verify {
        tracing::warn!(
            server = %settings::display_url(url),
            "insecure_skip_verify is on: the ClickHouse server's certificate is not checked"
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

impl Sink for ClickHouseSink {
    fn describe(&self) -> String {
        format!(
            "clickhouse {} table {}",
            self.client.target.server,
            self.table_name()
        )
    }

    fn write(&mut self, rows: &[WindowRow]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.ensure_ready()?;
        if let Some(partition) = self.partition {
            return self.insert_partial(rows, partition);
        }
        let mut split = Split::default();
        let mut sendable = Vec::with_capacity(rows.len());
        let mut grouped_rows = Vec::new();
        for row in rows {
            let (checked, dest) = match &row.group {
                None => (encode::check_row(row), Dest::Totals),
                Some(key) => (
                    grouped::check_row(row, key, &self.groupings),
                    Dest::Grouped(&key.dims),
                ),
            };
            match checked {
                Err(reason) if self.check_rows => split.refused.push(DeadLetter {
                    table: self.dest_name(dest),
                    row: row.clone(),
                    error: reason,
                }),
                _ if row.group.is_some() => grouped_rows.push(row),
                _ => sendable.push(row),
            }
        }
        // One INSERT (one atomic block) per batch. Fault-injection tests can
        // split a batch into several INSERTs, to crash after part of it.
        let chunk_rows = crate::failpoint::value("sink::clickhouse::insert_chunk_rows")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(sendable.len().max(1));
        crate::failpoint::crash_point("sink::clickhouse::before_insert");
        // The grouped rows first: the totals' INSERT stays last, as the
        // crash points between and after chunks expect.
        self.insert_grouped(&grouped_rows, &mut split)?;
        let mut chunks = sendable.chunks(chunk_rows).peekable();
        while let Some(chunk) = chunks.next() {
            self.insert_or_split(Dest::Totals, chunk, &mut split)?;
            if chunks.peek().is_some() {
                crate::failpoint::crash_point("sink::clickhouse::between_chunks");
            }
        }
        self.record_dead_letters(&split.refused)?;
        crate::failpoint::crash_point("sink::clickhouse::after_insert");
        Ok(())
    }

    fn read_final(&mut self) -> Result<Vec<WindowRow>, SinkError> {
        let action = "reading the final rows";
        self.profile()?;
        if self.group_mode {
            return self.read_combined();
        }
        if self.table_info()?.is_none() {
            // Nothing is created for a read (see `prepare`).
            let partial = partial::table(&self.table);
            let found = self.read(action, schema::tables_sql(&self.database, &partial))?;
            return Err(SinkError::Fatal(if found.trim().is_empty() {
                format!(
                    "ClickHouse {}: {action}: table {} does not exist. Check `database` and `table` in \
                     the ClickHouse settings (CLICKHOUSE_DATABASE, CLICKHOUSE_TABLE); a job creates the \
                     table at its first start, `results` and `verify` never do",
                    self.client.target.server,
                    self.table_name(),
                )
            } else {
                format!(
                    "ClickHouse {}: {action}: table {} does not exist, but {partial} does: a consumer \
                     group in group mode wrote these results; read them with the group's configuration, \
                     or with --set kafka.group_mode=true",
                    self.client.target.server,
                    self.table_name(),
                )
            }));
        }
        let text = self.read(action, schema::read_final_sql(&self.database, &self.table))?;
        let rows =
            encode::parse_final_rows(&text).map_err(|detail| self.bad_answer(action, detail))?;
        if rows.is_empty() {
            self.hint_group_mode()?;
        }
        Ok(rows)
    }

    fn read_grouped(&mut self) -> Result<Vec<WindowRow>, SinkError> {
        self.profile()?;
        self.read_grouped_tables()
    }

    fn max_version(&mut self, limit: u64) -> Result<u64, SinkError> {
        let action = "reading the highest version";
        self.ensure_ready()?;
        if self.partition.is_some() {
            // A partial row's version is an offset, not a count: nothing to
            // number above (see `partial`).
            return Ok(0);
        }
        // The grouped tables too: a fresh state must not number its rows
        // below what any table holds (a grouped table can hold versions
        // its window's total row lacks: a dead-lettered total, a truncated
        // totals table).
        let mut tables = vec![self.table.clone()];
        tables.extend(
            self.groupings
                .iter()
                .map(|g| grouped::table(&self.table, g)),
        );
        let mut highest = 0;
        for table in tables {
            let text = self.read(
                action,
                schema::max_version_sql(&self.database, &table, limit),
            )?;
            let version = encode::parse_max_version(&text)
                .map_err(|detail| self.bad_answer(action, detail))?;
            highest = highest.max(version);
        }
        Ok(highest)
    }
}

#[cfg(test)]
mod tests;
