package dev.streamforge.peer;

/**
 * StreamForge's input rules (SPEC section 1, docs/semantics.md "Input rules")
 * written as Flink SQL, for the job that reads raw JSON lines.
 *
 * <p>Flink SQL has no way to parse a JSON text once and then look at several
 * of its fields: every {@code JSON_QUERY} or {@code JSON_VALUE} call parses the
 * whole line again (Flink 2.2's {@code TRY_PARSE_JSON} gives a VARIANT whose
 * fields SQL cannot read yet). And the planner merges stacked projections
 * into one, copying an expression into every place that uses it, so a field
 * used by five checks would be parsed five times, and a time used by the
 * range check and as the value would be parsed twice. The rules therefore
 * run in four steps, each materialised before the next (the job converts
 * each step's table to a DataStream and back, which the planner cannot merge
 * across):
 *
 * <ol>
 *   <li>{@link #FIELDS}, over a table with one STRING column {@code line}:
 *       one {@code JSON_QUERY} per field the rules need, giving the field's
 *       JSON text wrapped in an array: {@code ["abc"]} for a string,
 *       {@code [12.50]} for a number, {@code [true]}, {@code [{...}]}, or NULL
 *       when the field is absent or {@code null}, or the line is not a JSON
 *       object. Seven parses a line, the fewest SQL allows.</li>
 *   <li>{@link #VALUES}: the fields' values and type checks, from those texts
 *       (string functions only).</li>
 *   <li>{@link #CHECKS}: the remaining rules but the time's range, and the
 *       event time in UTC;</li>
 *   <li>{@link #ROWTIME}: the range check and the rowtime column the
 *       watermark is declared on; {@link #AMOUNT} is what the window sums.</li>
 * </ol>
 *
 * <p>What these rules do not express (the data sets compared have none of
 * these): a JSON text followed by other text is accepted by Flink's JSON
 * functions ({@code {"a":1} xx}), StreamForge says {@code malformed_json};
 * leap seconds ({@code :60} in the last second of a month) are rejected here,
 * accepted there; the wrong-clock guard ({@code implausible_event_time}) needs
 * each partition's records in order, with state, and is not in SQL.
 */
final class RawJsonRules {
    private RawJsonRules() {}

    /** The wrapped JSON text of {@code field} (step 1). */
    private static String json(String field) {
        return "JSON_QUERY(line, '$." + field + "' WITH UNCONDITIONAL ARRAY WRAPPER)";
    }

    /** Step 1: the select list over a table with one STRING column, {@code line}. */
    static final String FIELDS = String.join(",\n  ",
            json("event_id") + " AS event_id_json",
            json("order_id") + " AS order_id_json",
            json("user_id") + " AS user_id_json",
            json("amount") + " AS amount_json",
            json("event_time") + " AS event_time_json",
            json("city") + " AS city_json",
            json("category") + " AS category_json");

    /** True when a wrapped JSON text holds a string. */
    private static String isString(String wrapped) {
        return "(" + wrapped + " LIKE '[\"%')";
    }

    /** The JSON value inside the wrapper: {@code "abc"}, {@code 12.50}. */
    private static String inner(String wrapped) {
        return "SUBSTR(" + wrapped + ", 2, CHAR_LENGTH(" + wrapped + ") - 2)";
    }

    /** The text of a string, unescaped; NULL for any other type. */
    private static String stringText(String wrapped) {
        return "CASE WHEN " + isString(wrapped) + " THEN JSON_UNQUOTE(" + inner(wrapped) + ") END";
    }

    /**
     * Step 2, over step 1's columns:
     * <ul>
     *   <li>{@code event_id}: the string, NULL for any other type;</li>
     *   <li>{@code user_id}: a string, or a JSON integer as its decimal text
     *       ({@code 12} and {@code "12"} are one user; Flink's JSON reader
     *       writes {@code -0} back as {@code 0}), NULL for any other type;</li>
     *   <li>{@code amount}: the text of a JSON number or of a string;</li>
     *   <li>{@code event_time}: the text of a string; {@code event_time_ms}:
     *       an integer JSON number (no fraction, no exponent);</li>
     *   <li>{@code shape_ok}: order_id a string, city and category absent,
     *       null or strings.</li>
     * </ul>
     */
    static final String VALUES = String.join(",\n  ",
            stringText("event_id_json") + " AS event_id",
            "CASE WHEN " + isString("user_id_json") + " THEN JSON_UNQUOTE(" + inner("user_id_json") + ")"
                    + " WHEN REGEXP(user_id_json, '^\\[-?[0-9]+\\]$') THEN " + inner("user_id_json")
                    + " END AS user_id",
            "CASE WHEN " + isString("amount_json") + " THEN JSON_UNQUOTE(" + inner("amount_json") + ")"
                    + " ELSE " + inner("amount_json") + " END AS amount",
            stringText("event_time_json") + " AS event_time",
            "CASE WHEN REGEXP(event_time_json, '^\\[-?[0-9]{1,18}\\]$')"
                    + " THEN TRY_CAST(" + inner("event_time_json") + " AS BIGINT) END AS event_time_ms",
            "(" + isString("order_id_json")
                    + " AND (city_json IS NULL OR " + isString("city_json") + ")"
                    + " AND (category_json IS NULL OR " + isString("category_json") + ")) AS shape_ok");

    /** The exact amount, for the window's sum (after step 4, valid rows only). */
    static final String AMOUNT = "TRY_CAST(amount AS DECIMAL(18, 2))";

    /**
     * The amount rule: {@code -?digits(.digits)?} with at most two decimals
     * of value (trailing zeros are fine), at least zero ({@code -0} is zero),
     * at most 9999999999999999.99; with an exponent (magnitude at most 40),
     * the same checks on its exact decimal value. No {@code +}, no spaces.
     */
    private static final String AMOUNT_OK = "(CASE"
            + " WHEN REGEXP(amount, '^(-?0+(\\.0+)?|0*[0-9]{1,16}(\\.[0-9]{1,2}0*)?)$') THEN TRUE"
            + " WHEN REGEXP(amount, '^-?[0-9]+(\\.[0-9]+)?[eE][+-]?[0-9]+$')"
            + "  AND TRY_CAST(REGEXP_EXTRACT(amount, '[eE][+-]?([0-9]+)$', 1) AS INT) <= 40"
            + " THEN COALESCE(TRY_CAST(amount AS DECIMAL(38, 18)) BETWEEN 0 AND 9999999999999999.99"
            + "  AND TRY_CAST(amount AS DECIMAL(38, 18))"
            + "   = CAST(TRY_CAST(amount AS DECIMAL(38, 18)) AS DECIMAL(38, 2)), FALSE)"
            + " ELSE FALSE END)";

    /** {@code YYYY-MM-DD HH:MM:SS} of the event-time text (its local time). */
    private static final String LOCAL = "(SUBSTR(event_time, 1, 10) || ' ' || SUBSTR(event_time, 12, 8))";

    private static final String LOCAL_FORMAT = "'yyyy-MM-dd HH:mm:ss'";

    /** The RFC 3339 shape: date, T (or t, or a space), time, fraction, Z or offset. */
    private static final String RFC3339 =
            "'^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$'";

    /** True when the text ends in Z (UTC) rather than an offset. */
    private static final String ZULU = "(UPPER(SUBSTR(event_time, CHAR_LENGTH(event_time), 1)) = 'Z')";

    /** The offset's hours and minutes (in {@code ±hh:mm} at the end). */
    private static final String OFFSET_H = "TRY_CAST(SUBSTR(event_time, CHAR_LENGTH(event_time) - 4, 2) AS INT)";

    private static final String OFFSET_M = "TRY_CAST(SUBSTR(event_time, CHAR_LENGTH(event_time) - 1, 2) AS INT)";

    /** The offset in minutes east of UTC (0 for Z); needs the RFC 3339 shape. */
    private static final String OFFSET_MIN = "(CASE WHEN " + ZULU + " THEN 0"
            + " ELSE (CASE WHEN SUBSTR(event_time, CHAR_LENGTH(event_time) - 5, 1) = '-' THEN -1 ELSE 1 END)"
            + "  * (" + OFFSET_H + " * 60 + " + OFFSET_M + ") END)";

    /** The fraction truncated to milliseconds (toward the earlier instant). */
    private static final String FRACTION_MS = "(CASE WHEN SUBSTR(event_time, 20, 1) = '.'"
            + " THEN TRY_CAST(RPAD(SUBSTR(REGEXP_EXTRACT(event_time, '\\.([0-9]+)', 1), 1, 3), 3, '0') AS INT)"
            + " ELSE 0 END)";

    /**
     * The text form's checks beyond its shape: a real calendar date and time
     * (the local time survives a round trip through epoch seconds, so month
     * 13, February 30 or hour 24 do not), and an offset of at most 23:59.
     */
    private static final String TEXT_TIME_OK = "(REGEXP(event_time, " + RFC3339 + ")"
            + " AND FROM_UNIXTIME(UNIX_TIMESTAMP(" + LOCAL + ", " + LOCAL_FORMAT + "), " + LOCAL_FORMAT + ") = " + LOCAL
            + " AND (" + ZULU + " OR (" + OFFSET_H + " <= 23 AND " + OFFSET_M + " <= 59)))";

    /**
     * The event time in epoch milliseconds, UTC, before the range check, or
     * NULL when it is neither an integer nor RFC 3339 text.
     */
    private static final String EVENT_MS = "(CASE"
            + " WHEN event_time_ms IS NOT NULL THEN event_time_ms"
            + " WHEN " + TEXT_TIME_OK
            + " THEN UNIX_TIMESTAMP(" + LOCAL + ", " + LOCAL_FORMAT + ") * 1000"
            + "  + " + FRACTION_MS + " - " + OFFSET_MIN + " * 60000"
            + " END)";

    /**
     * Every rule but the event time's, in StreamForge's order: event_id a
     * string of 1..128 characters, order_id a string, user_id a string or an
     * integer, the amount rule, city and category absent, null or strings.
     * Which rule a broken line breaks (its anomaly reason) is not computed:
     * only whether it counts.
     */
    private static final String VALID_BUT_TIME = "COALESCE(CHAR_LENGTH(event_id) BETWEEN 1 AND 128"
            + " AND shape_ok AND user_id IS NOT NULL AND " + AMOUNT_OK + ", FALSE)";

    /**
     * Step 3, over step 2's columns: the values the window reads, whether
     * every rule but the time's holds, and the event time in ms.
     */
    static final String CHECKS = String.join(",\n  ",
            "event_id", "user_id", "amount",
            VALID_BUT_TIME + " AS valid_but_time",
            EVENT_MS + " AS event_ms");

    /** The epoch instant an invalid line is given: behind every watermark, and filtered out. */
    static final long INVALID_TIME_MS = 0;

    /**
     * Step 4, over step 3's columns: the rowtime of a line, its event time
     * when the whole line is valid, else {@link #INVALID_TIME_MS}, so that (as
     * in StreamForge) only valid events move the watermark. The time's range:
     * windows of 60 s sliding by 30 s hold no time before
     * 1970-01-01T00:00:30Z ({@code event_time_out_of_range}), and nothing
     * after 2099-12-31T23:59:59.999Z is accepted ({@code bad_event_time}).
     */
    static final String ROWTIME = "TO_TIMESTAMP_LTZ(CASE WHEN valid_but_time"
            + " AND event_ms BETWEEN 30000 AND 4102444799999 THEN event_ms ELSE " + INVALID_TIME_MS + " END, 3)";
}
