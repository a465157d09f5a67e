//! What can go wrong talking to ClickHouse, sorted by what the caller must
//! do about it.
//!
//! Every failure becomes a [`ClickHouseError`]: what was being done (the
//! action, the server, the table), an [`ErrorKind`] and ClickHouse's own
//! words, worded with advice for the operator. The kind decides the
//! [`RetryClass`]: send the same request again later, split the batch
//! (the request is refused for some of the rows it carries), or stop and
//! let an operator act.
//!
//! # Codes before statuses
//!
//! ClickHouse 18.16 answers most errors with HTTP 500, current releases with
//! 400, 404 or 500 depending on the code, and a proxy in between may answer
//! anything. So the ClickHouse error code, when there is one (in the body,
//! `Code: 60, ...` on 18.16 and `Code: 60. DB::Exception: ...` now, or in the
//! `X-ClickHouse-Exception-Code` header), decides; the HTTP status decides
//! only for the codes these tables do not list, and for answers without a
//! code.

use std::fmt;

use thiserror::Error;

use crate::sink::SinkError;

/// The longest ClickHouse message quoted in an error, in characters.
pub(super) const MAX_MESSAGE_CHARS: usize = 300;

/// What the caller does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// The same request may succeed later: send it again after a backoff.
    Retry,
    /// The request can never succeed as a whole, but parts of it may: the
    /// batch is split to find the rows at fault (see `ClickHouseSink`).
    Split,
    /// An operator must act (credentials, permissions, schema, settings).
    Fatal,
}

/// What went wrong with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No connection, or it broke: the server is down or unreachable.
    Unreachable,
    /// No complete answer in time.
    Timeout,
    /// A server-side problem that may pass (5xx, 408, 429, overload codes).
    Server,
    /// The server certificate was rejected.
    Certificate,
    /// An https URL, but the port does not speak TLS.
    NotTls,
    /// Unknown user or wrong password.
    Credentials,
    /// Authenticated, but not allowed.
    Permission,
    /// The database or table does not exist.
    MissingTable,
    /// The query does not fit the table (an unknown column, a syntax the
    /// server lacks): about the table or the server, not the rows.
    Schema,
    /// A setting the server does not know or the user's profile forbids.
    Setting,
    /// The server refuses the values of some row (cannot parse, out of
    /// range): about the rows, if the table is the one SPEC §6 describes.
    Data,
    /// One INSERT touches more partitions than the server allows
    /// (`max_partitions_per_insert_block` on current releases).
    TooManyPartitions,
    /// Any other 4xx.
    BadRequest,
    /// The answer was not what the query asks for.
    BadAnswer,
}

impl ErrorKind {
    pub fn retry_class(self) -> RetryClass {
        match self {
            ErrorKind::Unreachable | ErrorKind::Timeout | ErrorKind::Server => RetryClass::Retry,
            ErrorKind::Data | ErrorKind::TooManyPartitions => RetryClass::Split,
            _ => RetryClass::Fatal,
        }
    }
}

/// One failed request: what failed, its kind, and the full message.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct ClickHouseError {
    /// What was being done: `inserting 12 rows`, `checking the table's schema`.
    pub action: String,
    pub kind: ErrorKind,
    /// ClickHouse's error code, when the answer carried one.
    pub code: Option<u32>,
    /// ClickHouse's own words (or the transport's), trimmed.
    pub detail: String,
    /// The whole message: server, table, action, detail and advice.
    pub message: String,
}

impl ClickHouseError {
    pub fn retry_class(&self) -> RetryClass {
        self.kind.retry_class()
    }
}

impl From<ClickHouseError> for SinkError {
    fn from(e: ClickHouseError) -> SinkError {
        match e.retry_class() {
            RetryClass::Retry => SinkError::Retryable(e.message),
            RetryClass::Split | RetryClass::Fatal => SinkError::Fatal(e.message),
        }
    }
}

/// A failure before it is worded for the operator: what the transport or
/// the answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub code: Option<u32>,
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// ClickHouse error codes that mean the credentials are wrong.
const CREDENTIAL_CODES: [u32; 5] = [
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    194, // REQUIRED_PASSWORD
    195, // IP_ADDRESS_NOT_ALLOWED
    516, // AUTHENTICATION_FAILED
];

/// ... that the user lacks a permission.
const PERMISSION_CODES: [u32; 3] = [
    164, // READONLY
    291, // DATABASE_ACCESS_DENIED
    497, // ACCESS_DENIED
];

/// ... that the database or table is missing.
const MISSING_TABLE_CODES: [u32; 2] = [
    60, // UNKNOWN_TABLE
    81, // UNKNOWN_DATABASE
];

/// ... that a setting is unknown or may not be changed.
const SETTING_CODES: [u32; 2] = [
    115, // UNKNOWN_SETTING
    452, // SETTING_CONSTRAINT_VIOLATION
];

/// ... that the query does not fit the table or the server: the same
/// request can never succeed, and no row is to blame.
const SCHEMA_CODES: [u32; 11] = [
    8,   // THERE_IS_NO_COLUMN
    10,  // NOT_FOUND_COLUMN_IN_BLOCK
    16,  // NO_SUCH_COLUMN_IN_TABLE
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    44,  // ILLEGAL_COLUMN
    46,  // UNKNOWN_FUNCTION
    47,  // UNKNOWN_IDENTIFIER
    48,  // NOT_IMPLEMENTED
    62,  // SYNTAX_ERROR
    73,  // UNKNOWN_FORMAT
    184, // ILLEGAL_AGGREGATION
];

/// ... that the values of some row cannot be stored (whatever the HTTP
/// status says: 500 on 18.16, often 400 now). Whether the row or the table
/// is at fault is settled by checking the table (see `ClickHouseSink`).
const DATA_CODES: [u32; 12] = [
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND (18.16 and 26.x: a decimal that does not fit)
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA (e.g. an unknown JSONEachRow field)
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    407, // DECIMAL_OVERFLOW
];

/// ... that the server is busy or something passing happened: retried
/// whatever the HTTP status says.
const TRANSIENT_CODES: [u32; 12] = [
    159, // TIMEOUT_EXCEEDED
    160, // TOO_SLOW
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY (a replica lost its keeper session)
    252, // TOO_MANY_PARTS (unless it is about partitions, see below)
    319, // UNKNOWN_STATUS_OF_INSERT
    394, // QUERY_WAS_CANCELLED
    999, // KEEPER_EXCEPTION
];

/// TOO_MANY_PARTS is also the code of "Too many partitions for single
/// INSERT block": a batch spanning many days, which waiting never fixes.
const TOO_MANY_PARTS: u32 = 252;

/// The ClickHouse error code in an error body: `Code: 60, ...` (18.16) or
/// `Code: 60. DB::Exception: ...` (current releases).
pub(super) fn error_code(body: &str) -> Option<u32> {
    let at = body.find("Code: ")?;
    let digits: String = body[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Sorts an error answer into an [`ErrorKind`]: the code first, then the
/// status (see the module docs).
pub(super) fn classify(status: u16, code: Option<u32>, detail: &str) -> ErrorKind {
    if let Some(c) = code {
        let tables: [(&[u32], ErrorKind); 6] = [
            (&CREDENTIAL_CODES, ErrorKind::Credentials),
            (&PERMISSION_CODES, ErrorKind::Permission),
            (&MISSING_TABLE_CODES, ErrorKind::MissingTable),
            (&SETTING_CODES, ErrorKind::Setting),
            (&SCHEMA_CODES, ErrorKind::Schema),
            (&DATA_CODES, ErrorKind::Data),
        ];
        if c == TOO_MANY_PARTS && detail.contains("partitions") {
            return ErrorKind::TooManyPartitions;
        }
        if let Some((_, kind)) = tables.iter().find(|(codes, _)| codes.contains(&c)) {
            return *kind;
        }
        if TRANSIENT_CODES.contains(&c) {
            return ErrorKind::Server;
        }
    }
    match status {
        401 | 403 => ErrorKind::Credentials,
        408 | 429 => ErrorKind::Server,
        400..=499 => ErrorKind::BadRequest,
        // 5xx, and anything unexpected (a proxy's 3xx or 1xx): may pass.
        _ => ErrorKind::Server,
    }
}

/// The first line of a ClickHouse error body, without 18.16's
/// `e.displayText() = ` noise, trimmed to [`MAX_MESSAGE_CHARS`].
pub(super) fn clickhouse_message(body: &str) -> String {
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line = line.replacen("e.displayText() = ", "", 1);
    let line = line
        .trim_end_matches(", e.what() = DB::Exception")
        .trim_end_matches(',');
    if line.chars().count() <= MAX_MESSAGE_CHARS {
        line.to_string()
    } else {
        let cut: String = line.chars().take(MAX_MESSAGE_CHARS).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_found_in_old_and_new_bodies() {
        assert_eq!(
            error_code("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist."),
            Some(60)
        );
        assert_eq!(
            error_code("Code: 516. DB::Exception: default: Authentication failed"),
            Some(516)
        );
        assert_eq!(error_code("Bad Gateway"), None);
        assert_eq!(error_code("Code: x"), None);
    }

    #[test]
    fn failures_are_classified_from_sample_bodies() {
        use ErrorKind::*;
        let cases: &[(u16, &str, ErrorKind)] = &[
            (500, "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: \"0.07\"", Data),
            (500, "Code: 69, e.displayText() = DB::Exception: Too many digits in decimal value", Data),
            // Current releases answer data errors with 400, not 500.
            (400, "Code: 69. DB::Exception: Decimal value is too big: 38 digits were read. (ARGUMENT_OUT_OF_BOUND)", Data),
            (500, "Code: 117, e.displayText() = DB::Exception: Unknown field found while parsing JSONEachRow format: zzz", Data),
            (400, "Code: 117. DB::Exception: Unknown field found while parsing JSONEachRow format: zzz. (INCORRECT_DATA)", Data),
            (400, "Code: 62, e.displayText() = DB::Exception: Syntax error: failed at position 1", Schema),
            (400, "Code: 16. DB::Exception: No such column gmv in table t. (NO_SUCH_COLUMN_IN_TABLE) (version 24.3.1)", Schema),
            (500, "Code: 16, e.displayText() = DB::Exception: No such column gmv in table t", Schema),
            (404, "Code: 60, e.displayText() = DB::Exception: Table streamforge_test.nope doesn't exist.", MissingTable),
            (500, "Code: 60, e.displayText() = DB::Exception: Table streamforge_test.nope doesn't exist.", MissingTable),
            (404, "Code: 81. DB::Exception: Database nodb does not exist. (UNKNOWN_DATABASE)", MissingTable),
            (401, "Code: 193, e.displayText() = DB::Exception: Wrong password for user default", Credentials),
            (500, "Code: 192, e.displayText() = DB::Exception: Unknown user nobody", Credentials),
            (401, "Code: 516. DB::Exception: x: Authentication failed: password is incorrect. (AUTHENTICATION_FAILED)", Credentials),
            (403, "", Credentials),
            (403, "Code: 497. DB::Exception: x: Not enough privileges. (ACCESS_DENIED)", Permission),
            (500, "Code: 164, e.displayText() = DB::Exception: Cannot insert into table in readonly mode", Permission),
            (500, "Code: 115, e.displayText() = DB::Exception: Unknown setting async_insert", Setting),
            (400, "Code: 452. DB::Exception: Setting async_insert should not be changed. (SETTING_CONSTRAINT_VIOLATION)", Setting),
            (500, "Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)", Server),
            (500, "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). (TOO_MANY_PARTS)", TooManyPartitions),
            (500, "Code: 241. DB::Exception: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED)", Server),
            // A transient code is retried even when a server says 4xx.
            (400, "Code: 159. DB::Exception: Timeout exceeded: elapsed 5 seconds. (TIMEOUT_EXCEEDED)", Server),
            (503, "Code: 202. DB::Exception: Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES)", Server),
            (502, "", Server),
            (504, "<html>Gateway Timeout</html>", Server),
            (429, "slow down", Server),
            (408, "", Server),
            (400, "Port 9000 is for clickhouse-client program", BadRequest),
            (404, "There is no handle /nope", BadRequest),
            (405, "", BadRequest),
            // A code no table lists: the status decides.
            (500, "Code: 1001. DB::Exception: std::exception", Server),
            (400, "Code: 36. DB::Exception: Bad arguments. (BAD_ARGUMENTS)", BadRequest),
        ];
        for (status, body, want) in cases {
            let got = classify(*status, error_code(body), body);
            assert_eq!(got, *want, "HTTP {status} {body}");
        }
    }

    #[test]
    fn kinds_map_to_retry_classes() {
        use ErrorKind::*;
        for kind in [Unreachable, Timeout, Server] {
            assert_eq!(kind.retry_class(), RetryClass::Retry, "{kind:?}");
        }
        for kind in [Data, TooManyPartitions] {
            assert_eq!(kind.retry_class(), RetryClass::Split, "{kind:?}");
        }
        for kind in [
            Certificate,
            NotTls,
            Credentials,
            Permission,
            MissingTable,
            Schema,
            Setting,
            BadRequest,
            BadAnswer,
        ] {
            assert_eq!(kind.retry_class(), RetryClass::Fatal, "{kind:?}");
        }
    }

    #[test]
    fn clickhouse_messages_are_cleaned_and_trimmed() {
        let body = "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: \"0.07\": (at row 1)\n\
                    , e.what() = DB::Exception\n";
        assert_eq!(
            clickhouse_message(body),
            "Code: 27, DB::Exception: Cannot parse input: expected , before: \"0.07\": (at row 1)"
        );
        assert_eq!(
            clickhouse_message("Code: 60, e.displayText() = DB::Exception: Table a.b doesn't exist., e.what() = DB::Exception"),
            "Code: 60, DB::Exception: Table a.b doesn't exist."
        );
        let long = format!("Code: 1. {}", "é".repeat(1000));
        let msg = clickhouse_message(&long);
        assert_eq!(msg.chars().count(), MAX_MESSAGE_CHARS + 3);
        assert!(msg.ends_with("..."));
    }
}
