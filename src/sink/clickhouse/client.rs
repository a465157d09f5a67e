//! Requests to ClickHouse and what their answers mean.
//!
//! A [`Request`] is a statement, its data and the settings that apply to it;
//! a [`Transport`] delivers it. [`HttpTransport`] is ClickHouse's HTTP
//! interface, the only one in production: one blocking POST per request,
//! the statement in the body (or, for an INSERT, in the `query` URL
//! parameter with the rows as the body), settings as URL parameters, and
//! `wait_end_of_query=1` always, so the server answers only once the query
//! is done (an INSERT's rows are then in the table, and an error gets an
//! error status instead of a truncated 200). The trait exists so the very
//! same sink can also run against current ClickHouse in-process
//! (`tests/chdb_compat.rs` drives chdb through it).
//!
//! [`Client`] adds what every request needs whatever the transport: an
//! exception streamed inside a 200 body is a failure, and every failure is
//! worded for the operator as a typed [`ClickHouseError`].

use std::fmt::Write as _;
use std::time::Duration;

use reqwest::Url;

use super::error::{classify, clickhouse_message, error_code, ClickHouseError, ErrorKind, Failure};
use crate::setting::Secret;

/// One statement for ClickHouse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The statement when `body` is its data (`INSERT ... FORMAT
    /// JSONEachRow`); `None` when `body` is the statement itself.
    pub query: Option<String>,
    /// Settings for this request only, in order.
    pub settings: Vec<(&'static str, String)>,
    pub body: String,
}

impl Request {
    /// A statement that is the whole body.
    pub fn statement(sql: String) -> Self {
        Request {
            body: sql,
            ..Request::default()
        }
    }

    /// The statement and its data as one text, the way ClickHouse reads
    /// them (`query`, a newline, then the body).
    pub fn full_text(&self) -> String {
        match &self.query {
            Some(query) => format!("{query}\n{}", self.body),
            None => self.body.clone(),
        }
    }
}

/// What came back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// `X-ClickHouse-Exception-Code`, when present.
    pub exception_code: Option<u32>,
    /// `X-ClickHouse-Exception-Tag` (25.11 and later): the tag framing an
    /// exception streamed after a 200 header.
    pub exception_tag: Option<String>,
    pub body: String,
}

/// Delivers requests to a ClickHouse engine.
pub trait Transport: Send {
    /// Sends `request`; `Err` when no answer came (its kind says why).
    fn send(&self, request: &Request) -> Result<Response, Failure>;

    /// The engine as shown in messages: a URL without credentials.
    fn describe(&self) -> String;
}

/// How often a request is sent again at once after a connection closed
/// without an answer (see [`closed_unanswered`]).
pub(super) const STALE_RETRIES: u32 = 2;

/// ClickHouse's HTTP interface.
pub struct HttpTransport {
    client: reqwest::blocking::Client,
    /// The endpoint, without credentials (they go in a header).
    url: Url,
    user: String,
    password: Option<Secret>,
}

impl HttpTransport {
    pub(super) fn new(
        client: reqwest::blocking::Client,
        url: Url,
        user: String,
        password: Option<Secret>,
    ) -> Self {
        HttpTransport {
            client,
            url,
            user,
            password,
        }
    }
}

impl Transport for HttpTransport {
    fn describe(&self) -> String {
        super::settings::display_url(&self.url)
    }

    fn send(&self, request: &Request) -> Result<Response, Failure> {
        let mut params: Vec<(&str, &str)> = Vec::with_capacity(request.settings.len() + 2);
        if let Some(query) = &request.query {
            params.push(("query", query));
        }
        params.extend(request.settings.iter().map(|(k, v)| (*k, v.as_str())));
        params.push(("wait_end_of_query", "1"));
        let mut http = self.client.post(self.url.clone()).query(&params);
        if !self.user.is_empty() || self.password.is_some() {
            http = http.basic_auth(&self.user, self.password.as_ref().map(Secret::expose));
        }
        let http = http.body(request.body.clone());
        // A pooled keep-alive connection the server (or a proxy) closed just
        // as this request went out fails with nothing answered. Every
        // request this sink sends is idempotent (inserts are keyed and
        // versioned), so it is sent again, at once, on a new connection,
        // rather than reported as an outage.
        let mut stale_retries = 0;
        let response = loop {
            let attempt = http
                .try_clone()
                .expect("a request with an in-memory body can be cloned");
            match attempt.send() {
                Ok(response) => break response,
                Err(e) if stale_retries < STALE_RETRIES && closed_unanswered(&e) => {
                    stale_retries += 1;
                    tracing::debug!(error = %e, attempt = stale_retries, "ClickHouse closed the connection without an answer; sending again");
                }
                Err(e) => return Err(transport_failure(e)),
            }
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        };
        let exception_code = header("X-ClickHouse-Exception-Code").and_then(|v| v.parse().ok());
        let exception_tag = header("X-ClickHouse-Exception-Tag").filter(|t| !t.is_empty());
        let status = response.status().as_u16();
        let body = response.text().map_err(transport_failure)?;
        Ok(Response {
            status,
            exception_code,
            exception_tag,
            body,
        })
    }
}

/// Whether `error` is a connection that closed (or was reset) after the
/// request went out and before any answer came: what a reused keep-alive
/// connection the server just dropped looks like. A server that is down
/// refuses the connection instead, which this is not.
fn closed_unanswered(error: &reqwest::Error) -> bool {
    if error.is_timeout() || error.is_connect() {
        return false;
    }
    let mut next: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        // hyper's words for a connection closed before the answer.
        if e.to_string()
            .contains("connection closed before message completed")
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Describes a transport error: the top-level error without its URL (which
/// would repeat the query), then the innermost cause.
fn transport_failure(error: reqwest::Error) -> Failure {
    let error = error.without_url();
    let mut root: &dyn std::error::Error = &error;
    while let Some(next) = root.source() {
        root = next;
    }
    let top = error.to_string();
    let cause = root.to_string();
    let mut chain = String::new();
    let mut next: Option<&dyn std::error::Error> = Some(&error);
    while let Some(e) = next {
        let _ = write!(chain, "{e} / ");
        next = e.source();
    }
    let kind = if chain.contains("certificate") || chain.contains("Certificate") {
        ErrorKind::Certificate
    } else if chain.contains("corrupt message") || chain.contains("InvalidContentType") {
        // rustls got a plain HTTP answer to its handshake.
        ErrorKind::NotTls
    } else if error.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unreachable
    };
    let detail = if cause == top {
        top
    } else {
        format!("{top}: {cause}")
    };
    Failure {
        kind,
        code: None,
        detail,
    }
}

/// The exception in an answer whose status says success, if any: framed by
/// the `X-ClickHouse-Exception-Tag` (25.11 and later), announced by the
/// `X-ClickHouse-Exception-Code` header, or (older servers) plain
/// `Code: NNN ... DB::Exception` text after the data. None of this sink's
/// queries returns text that contains `DB::Exception` as data.
fn streamed_exception(response: &Response) -> Option<&str> {
    let body = response.body.as_str();
    if let Some(tag) = &response.exception_tag {
        let mut from = 0;
        while let Some(at) = body[from..].find("__exception__") {
            let rest = body[from + at + "__exception__".len()..].trim_start_matches(['\r', '\n']);
            if let Some(message) = rest.strip_prefix(tag.as_str()) {
                return Some(message.trim_start());
            }
            from += at + 1;
        }
    }
    let at = body.find("DB::Exception");
    if response.exception_code.is_some_and(|c| c != 0) {
        let start = at.and_then(|at| body[..at].rfind("Code: ")).unwrap_or(0);
        return Some(&body[start..]);
    }
    let at = at?;
    body[..at].rfind("Code: ").map(|start| &body[start..])
}

/// The answer's text, or the failure it reports.
pub(super) fn answer(response: Response) -> Result<String, Failure> {
    let success = (200..300).contains(&response.status);
    if success {
        let Some(exception) = streamed_exception(&response) else {
            return Ok(response.body);
        };
        let code = error_code(exception).or(response.exception_code);
        let message = clickhouse_message(exception);
        return Err(Failure {
            kind: classify(500, code, &message),
            code,
            detail: format!(
                "HTTP {} with an exception after the answer began: {message}",
                response.status
            ),
        });
    }
    let code = error_code(&response.body).or(response.exception_code);
    let message = clickhouse_message(&response.body);
    let detail = if message.is_empty() {
        let reason = reqwest::StatusCode::from_u16(response.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        format!("HTTP {} {reason} with an empty body", response.status)
    } else {
        format!("HTTP {}: {message}", response.status)
    };
    Err(Failure {
        kind: classify(response.status, code, &message),
        code,
        detail,
    })
}

/// Who is talking to what, for messages.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The server, without credentials.
    pub server: String,
    pub database: String,
    pub table: String,
    pub user: String,
    /// Where the password comes from (never the password).
    pub password_source: String,
    pub timeout: Duration,
}

impl Target {
    pub fn table_name(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }
}

/// A transport, plus what failures mean and how to say so.
pub(super) struct Client {
    transport: Box<dyn Transport>,
    pub target: Target,
}

impl Client {
    pub fn new(transport: Box<dyn Transport>, target: Target) -> Self {
        Client { transport, target }
    }

    /// Sends `request` and returns the answer's text.
    pub fn run(&self, action: &str, request: &Request) -> Result<String, ClickHouseError> {
        self.transport
            .send(request)
            .and_then(answer)
            .map_err(|failure| self.error(action, failure))
    }

    /// Words a failure for the operator.
    pub fn error(&self, action: &str, mut failure: Failure) -> ClickHouseError {
        // 18.16 answers a query on system.columns with UNKNOWN_TABLE when
        // another table of the database is dropped meanwhile: that names a
        // table which is not ours, and passes.
        let t = &self.target;
        if failure.kind == ErrorKind::MissingTable
            && failure.detail.contains("doesn't exist")
            && !failure
                .detail
                .contains(&format!("{}.{} ", t.database, t.table))
            && !failure
                .detail
                .contains(&format!("{}.{}.", t.database, t.table))
            && !failure
                .detail
                .contains(&format!("Database {} ", t.database))
        {
            failure.kind = ErrorKind::Server;
        }
        let retryable = failure.kind.retry_class() == super::RetryClass::Retry;
        let message = format!(
            "ClickHouse {}, table {}: {action} failed: {}. {}{}",
            t.server,
            t.table_name(),
            failure.detail.trim_end_matches('.'),
            self.advice(failure.kind),
            if retryable { " (retryable)" } else { "" }
        );
        ClickHouseError {
            action: action.to_string(),
            kind: failure.kind,
            code: failure.code,
            detail: failure.detail,
            message,
        }
    }

    fn advice(&self, kind: ErrorKind) -> String {
        let t = &self.target;
        match kind {
            ErrorKind::Unreachable => format!(
                "Is ClickHouse running and reachable at {}? (For the local stack: scripts/stack.sh up.)",
                t.server
            ),
            ErrorKind::Timeout => format!(
                "No complete answer within {:?}: ClickHouse may be overloaded or the network slow; \
                 raise `timeout` in the ClickHouse settings if it persists",
                t.timeout
            ),
            ErrorKind::Server => "A server-side problem that usually passes (overload, memory, too many parts)".into(),
            ErrorKind::Certificate => "The server's TLS certificate was rejected: set `ca_file` to the CA that signed \
                it (or `insecure_skip_verify: true`, for tests only)"
                .into(),
            ErrorKind::NotTls => "The port does not speak TLS: use an http:// URL for it, or the https port (often 8443)"
                .into(),
            ErrorKind::Credentials => format!(
                "Check the credentials: `user` is `{}`, and {} (password_env / password_file in the ClickHouse \
                 settings)",
                t.user, t.password_source
            ),
            ErrorKind::Permission => format!(
                "User `{}` lacks a permission: grant it SELECT, INSERT, CREATE TABLE and TRUNCATE on {} \
                 (and SELECT on system.tables, system.columns and system.settings)",
                t.user,
                t.table_name()
            ),
            ErrorKind::MissingTable => format!(
                "{} is missing: check `database` and `table` in the ClickHouse settings \
                 (CLICKHOUSE_DATABASE, CLICKHOUSE_TABLE). A job creates them at its first start \
                 with `create_table: true` (the default); `results` and `verify` never do. Or create \
                 them with sql/create_ck_table.sql",
                t.table_name()
            ),
            ErrorKind::Schema => format!(
                "ClickHouse rejects this query as such, so retrying cannot help; the table's schema probably \
                 differs from SPEC §6: compare `SHOW CREATE TABLE {}` with sql/create_ck_table.sql",
                t.table_name()
            ),
            ErrorKind::Setting => format!(
                "StreamForge pins the insert settings that change what an INSERT means (docs/stack.md); the \
                 server or the profile of user `{}` refuses one: allow it in the profile's constraints",
                t.user
            ),
            ErrorKind::Data => "ClickHouse cannot store some value of these rows, so retrying cannot help".into(),
            ErrorKind::TooManyPartitions => "The batch spans more partitions (days) than one INSERT may; \
                StreamForge splits such batches"
                .into(),
            ErrorKind::BadRequest => "Check that `url` points at ClickHouse's HTTP interface (port 8123, or 8443 for \
                https), not the native port 9000"
                .into(),
            ErrorKind::BadAnswer => "The answer does not match the query: is `url` a ClickHouse server?".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Response {
        Response {
            status: 200,
            body: body.into(),
            ..Response::default()
        }
    }

    #[test]
    fn a_plain_answer_is_its_text() {
        assert_eq!(answer(ok("1\t2\n")).unwrap(), "1\t2\n");
        assert_eq!(answer(ok("")).unwrap(), "");
    }

    #[test]
    fn an_exception_after_a_200_header_is_a_failure() {
        // 18.16: the text follows whatever data was already sent.
        let old = ok("1764064800\t1\n17640Code: 159, e.displayText() = DB::Exception: Timeout exceeded: elapsed 5.0 seconds, e.what() = DB::Exception\n");
        let failure = answer(old).unwrap_err();
        assert_eq!((failure.kind, failure.code), (ErrorKind::Server, Some(159)));
        assert!(
            failure.detail.contains("after the answer began"),
            "{}",
            failure.detail
        );

        // Current releases without the tag.
        let new = ok("Code: 69. DB::Exception: Decimal value is too big. (ARGUMENT_OUT_OF_BOUND) (version 24.8.1)\n");
        let failure = answer(new).unwrap_err();
        assert_eq!((failure.kind, failure.code), (ErrorKind::Data, Some(69)));

        // 25.11 and later: framed by the tag announced in a header.
        let tagged = Response {
            exception_tag: Some("PU1FNUFH98".into()),
            ..ok("a\tb\n__exception__\r\nPU1FNUFH98\r\nCode: 241. DB::Exception: Memory limit exceeded\n45 PU1FNUFH98\r\n__exception__\r\n")
        };
        let failure = answer(tagged).unwrap_err();
        assert_eq!((failure.kind, failure.code), (ErrorKind::Server, Some(241)));
        assert!(
            failure.detail.contains("Memory limit exceeded"),
            "{}",
            failure.detail
        );

        // The header alone (a trailer) is enough.
        let header_only = Response {
            exception_code: Some(210),
            ..ok("partial")
        };
        assert_eq!(answer(header_only).unwrap_err().code, Some(210));
        // ...but a zero code is no exception.
        let zero = Response {
            exception_code: Some(0),
            ..ok("1\n")
        };
        assert_eq!(answer(zero).unwrap(), "1\n");
    }

    #[test]
    fn error_statuses_carry_the_clickhouse_message() {
        let failure = answer(Response {
            status: 404,
            exception_code: Some(60),
            body: "Code: 60. DB::Exception: Table d.t does not exist. (UNKNOWN_TABLE)\n".into(),
            ..Response::default()
        })
        .unwrap_err();
        assert_eq!(failure.kind, ErrorKind::MissingTable);
        assert!(
            failure.detail.starts_with("HTTP 404: Code: 60."),
            "{}",
            failure.detail
        );
        let failure = answer(Response {
            status: 502,
            ..Response::default()
        })
        .unwrap_err();
        assert_eq!(failure.detail, "HTTP 502 Bad Gateway with an empty body");
    }

    #[test]
    fn the_full_text_is_the_statement_then_its_data() {
        let request = Request {
            query: Some("INSERT INTO t FORMAT JSONEachRow".into()),
            body: "{}\n".into(),
            ..Request::default()
        };
        assert_eq!(
            request.full_text(),
            "INSERT INTO t FORMAT JSONEachRow\n{}\n"
        );
        assert_eq!(
            Request::statement("SELECT 1".into()).full_text(),
            "SELECT 1"
        );
    }
}
