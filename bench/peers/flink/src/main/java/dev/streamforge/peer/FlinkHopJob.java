package dev.streamforge.peer;

import java.io.BufferedWriter;
import java.io.File;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.PipelineOptions;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.Schema;
import org.apache.flink.table.api.Table;
import org.apache.flink.table.api.TableResult;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.types.Row;
import org.apache.flink.util.CloseableIterator;

/**
 * The StreamForge job (SPEC sections 1, 4 and 8) in Flink SQL, run on a
 * local MiniCluster inside this JVM.
 *
 * <p>Input: a directory of JSON-lines files, one file per partition, exactly
 * what {@code streamforge run --source files:DIR} reads. Each file is its own
 * source table with its own watermark ({@code ts - 5 s}) and the tables are
 * combined with UNION ALL, so the job's watermark is the minimum over the
 * partitions, as in StreamForge and as a Kafka source with per-partition
 * watermarks would give. (A single filesystem table over the directory would
 * read the files one after the other in one reader, and the second file would
 * be entirely behind the watermark the first one left.)
 *
 * <p>Query: {@code HOP} window TVF, slide 30 s, size 60 s, with COUNT(*),
 * SUM(amount) as DECIMAL(18, 2) and COUNT(DISTINCT user_id). The results are
 * collected to this program, sorted by window_start and written in
 * StreamForge's result format (SPEC section 8), one JSON object a line.
 *
 * <p>Usage: {@code FlinkHopJob --input DIR --output FILE [--parallelism N]
 * [--dedup] [--raw] [--object-reuse] [--timings FILE] [--launched-ms EPOCH_MS]
 * [--one-table]}. {@code --dedup} first keeps the first event of each
 * event_id (ROW_NUMBER over processing time), which StreamForge always does.
 * {@code --raw} reads the lines as raw text (payloads as producers write
 * them, broken ones included) and applies StreamForge's input rules in SQL
 * ({@link RawJsonRules}) instead of reading clean, canonical lines with the
 * JSON format. {@code --object-reuse} sets {@code pipeline.object-reuse},
 * Flink's usual tuning for throughput. {@code --timings} writes key=value
 * lines: the phases of the run in milliseconds ({@code --launched-ms}, the
 * time the caller started the JVM, makes JVM start-up one of them).
 * {@code --one-table} reads the directory as a single table instead, to show
 * the difference.
 */
public final class FlinkHopJob {
    /** A schema that adds nothing to the derived columns. */
    private static final Schema NOTHING = Schema.newBuilder().build();
    private static final Pattern NUMBERED = Pattern.compile("(\\d+)");

    public static void main(String[] args) throws Exception {
        long mainMs = System.currentTimeMillis();
        long jvmStartMs = ManagementFactory.getRuntimeMXBean().getStartTime();

        Path input = null;
        Path output = null;
        Path timings = null;
        int parallelism = 1;
        boolean dedup = false;
        long launchedMs = -1;
        boolean oneTable = false;
        boolean raw = false;
        boolean objectReuse = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--input" -> input = Path.of(args[++i]);
                case "--output" -> output = Path.of(args[++i]);
                case "--timings" -> timings = Path.of(args[++i]);
                case "--parallelism" -> parallelism = Integer.parseInt(args[++i]);
                case "--dedup" -> dedup = true;
                case "--launched-ms" -> launchedMs = Long.parseLong(args[++i]);
                case "--one-table" -> oneTable = true;
                case "--raw" -> raw = true;
                case "--object-reuse" -> objectReuse = true;
                default -> usage("unknown argument " + args[i]);
            }
        }
        if (input == null || output == null) {
            usage("--input and --output are required");
        }
        List<Path> files = partitionFiles(input);
        if (oneTable) {
            // The naive form, kept to show why it is not used: one table over
            // the directory, whose files one reader takes one after another.
            files = List.of(input.toAbsolutePath());
        }

        Configuration conf = new Configuration();
        if (objectReuse) {
            // Chained operators hand rows on without a defensive copy.
            conf.set(PipelineOptions.OBJECT_REUSE, true);
        }
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(parallelism);
        StreamTableEnvironment tenv =
                StreamTableEnvironment.create(env, EnvironmentSettings.inStreamingMode());
        // Windows are aligned to the epoch; window_start comes back as UTC.
        tenv.getConfig().set("table.local-time-zone", "UTC");

        List<String> selects = new ArrayList<>();
        for (int p = 0; p < files.size(); p++) {
            String table = "orders_p" + p;
            if (raw) {
                selects.add(rawPartition(tenv, table, files.get(p)));
                continue;
            }
            tenv.executeSql(
                    "CREATE TEMPORARY TABLE " + table + " (\n"
                            + "  event_id STRING,\n"
                            + "  user_id STRING,\n"
                            + "  amount DECIMAL(12, 2),\n"
                            + "  event_time BIGINT,\n"
                            + "  ts AS TO_TIMESTAMP_LTZ(event_time, 3),\n"
                            + "  pt AS PROCTIME(),\n"
                            + "  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND\n"
                            + ") WITH (\n"
                            + "  'connector' = 'filesystem',\n"
                            + "  'path' = '" + sqlString(files.get(p).toUri().toString()) + "',\n"
                            + "  'format' = 'json',\n"
                            + "  'json.fail-on-missing-field' = 'true'\n"
                            + ")");
            selects.add("SELECT event_id, user_id, amount, ts, pt FROM " + table);
        }
        tenv.executeSql("CREATE TEMPORARY VIEW orders AS\n" + String.join("\nUNION ALL\n", selects));
        String source = "orders";
        if (dedup) {
            tenv.executeSql(
                    "CREATE TEMPORARY VIEW orders_dedup AS\n"
                            + "SELECT event_id, user_id, amount, ts FROM (\n"
                            + "  SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY pt ASC) AS rn\n"
                            + "  FROM orders\n"
                            + ") WHERE rn = 1");
            source = "orders_dedup";
        }
        String query =
                "SELECT window_start, window_end,\n"
                        + "  COUNT(*) AS order_cnt,\n"
                        + "  CAST(SUM(amount) AS DECIMAL(18, 2)) AS gmv_total,\n"
                        + "  COUNT(DISTINCT user_id) AS user_cnt\n"
                        + "FROM TABLE(HOP(TABLE " + source + ", DESCRIPTOR(ts),"
                        + " INTERVAL '30' SECOND, INTERVAL '60' SECOND))\n"
                        + "GROUP BY window_start, window_end";

        long submitMs = System.currentTimeMillis();
        TableResult result = tenv.executeSql(query);
        TreeMap<Long, String> lines = new TreeMap<>();
        try (CloseableIterator<Row> rows = result.collect()) {
            while (rows.hasNext()) {
                Row row = rows.next();
                long start = epochSeconds(row.getField("window_start"));
                long end = epochSeconds(row.getField("window_end"));
                long count = ((Number) row.getField("order_cnt")).longValue();
                BigDecimal gmv = ((BigDecimal) row.getField("gmv_total")).setScale(2, RoundingMode.UNNECESSARY);
                long users = ((Number) row.getField("user_cnt")).longValue();
                String line = String.format(
                        "{\"window_start\": %d, \"window_end\": %d, \"order_cnt\": %d, \"gmv_total\": \"%s\", \"user_cnt\": %d}",
                        start, end, count, gmv.toPlainString(), users);
                if (lines.put(start, line) != null) {
                    throw new IllegalStateException("window " + start + " was emitted twice");
                }
            }
        }
        try (BufferedWriter out = Files.newBufferedWriter(output, StandardCharsets.UTF_8)) {
            for (String line : lines.values()) {
                out.write(line);
                out.write('\n');
            }
        }
        long doneMs = System.currentTimeMillis();
        long netRuntimeMs = -1;
        JobClient client = result.getJobClient().orElse(null);
        if (client != null) {
            JobExecutionResult done = client.getJobExecutionResult().get();
            netRuntimeMs = done.getNetRuntime();
        }

        Map<String, Object> t = new TreeMap<>();
        t.put("jvm_start_to_main_ms", mainMs - jvmStartMs);
        t.put("launch_to_main_ms", launchedMs < 0 ? -1 : mainMs - launchedMs);
        t.put("main_to_submit_ms", submitMs - mainMs);
        t.put("submit_to_results_written_ms", doneMs - submitMs);
        t.put("flink_net_runtime_ms", netRuntimeMs);
        t.put("windows", lines.size());
        t.put("partitions", files.size());
        t.put("parallelism", parallelism);
        t.put("dedup", dedup);
        t.put("raw", raw);
        t.put("object_reuse", objectReuse);
        StringBuilder text = new StringBuilder();
        t.forEach((k, v) -> text.append(k).append('=').append(v).append('\n'));
        System.err.print("flink-peer: " + text.toString().replace("\n", " ").trim() + "\n");
        if (timings != null) {
            Files.writeString(timings, text.toString(), StandardCharsets.UTF_8);
        }
        // The MiniCluster's non-daemon threads would keep the JVM alive.
        System.exit(0);
    }

    /**
     * Declares partition file {@code path} as raw lines checked by
     * {@link RawJsonRules}, and returns the SELECT of its valid events
     * (event_id, user_id, amount, ts, pt) for the UNION ALL.
     *
     * <p>The rules' four steps are materialised one after the other (see
     * {@link #materialise}); the last one declares the rowtime and the
     * watermark. A line that breaks a rule gets rowtime 0, so it never moves
     * the watermark, and is filtered out before the window.
     */
    private static String rawPartition(StreamTableEnvironment tenv, String table, Path path) {
        String lines = table + "_lines";
        tenv.executeSql(
                "CREATE TEMPORARY TABLE " + lines + " (line STRING) WITH (\n"
                        + "  'connector' = 'filesystem',\n"
                        + "  'path' = '" + sqlString(path.toUri().toString()) + "',\n"
                        + "  'format' = 'raw'\n"
                        + ")");
        Table fields = tenv.sqlQuery("SELECT\n  " + RawJsonRules.FIELDS + "\nFROM " + lines);
        Table values = tenv.sqlQuery(
                "SELECT\n  " + RawJsonRules.VALUES + "\nFROM " + materialise(tenv, fields, NOTHING));
        Table checks = tenv.sqlQuery(
                "SELECT\n  " + RawJsonRules.CHECKS + "\nFROM " + materialise(tenv, values, NOTHING));
        Schema timed = Schema.newBuilder()
                .columnByExpression("ts", RawJsonRules.ROWTIME)
                .columnByExpression("pt", "PROCTIME()")
                .watermark("ts", "ts - INTERVAL '5' SECOND")
                .build();
        tenv.createTemporaryView(table, materialise(tenv, checks, timed));
        return "SELECT event_id, user_id, " + RawJsonRules.AMOUNT + " AS amount, ts, pt\n"
                + "FROM " + table + " WHERE ts > TO_TIMESTAMP_LTZ(" + RawJsonRules.INVALID_TIME_MS + ", 3)";
    }

    /**
     * Converts {@code table} to a DataStream and back (with {@code schema}'s
     * additions), so that what it computes is computed once: the planner
     * merges stacked SQL projections into one and would copy each of its
     * expressions into every place that uses it. Returns the new table,
     * inlined into SQL by its name.
     */
    private static Table materialise(StreamTableEnvironment tenv, Table table, Schema schema) {
        DataStream<Row> stream = tenv.toDataStream(table);
        return tenv.fromDataStream(stream, schema);
    }

    /** The files of a directory in the file source's order (numbers compared as numbers). */
    private static List<Path> partitionFiles(Path dir) throws IOException {
        File[] found = dir.toFile().listFiles(f -> f.isFile() && !f.getName().startsWith("."));
        if (found == null || found.length == 0) {
            throw new IOException("no input files in " + dir);
        }
        List<Path> files = new ArrayList<>();
        Arrays.stream(found).map(File::toPath).map(Path::toAbsolutePath).forEach(files::add);
        files.sort((a, b) -> naturalKey(a.getFileName().toString()).compareTo(naturalKey(b.getFileName().toString())));
        return files;
    }

    private static String naturalKey(String name) {
        Matcher m = NUMBERED.matcher(name);
        StringBuilder key = new StringBuilder();
        while (m.find()) {
            m.appendReplacement(key, String.format("%020d", Long.parseLong(m.group(1))));
        }
        m.appendTail(key);
        return key.toString();
    }

    private static long epochSeconds(Object value) {
        if (value instanceof LocalDateTime t) {
            return t.toEpochSecond(ZoneOffset.UTC);
        }
        if (value instanceof Instant t) {
            return t.getEpochSecond();
        }
        throw new IllegalStateException("unexpected window bound type " + value);
    }

    private static String sqlString(String s) {
        return s.replace("'", "''");
    }

    private static void usage(String problem) {
        System.err.println(problem);
        System.err.println(
                "usage: FlinkHopJob --input DIR --output FILE [--parallelism N] [--dedup] [--raw] [--object-reuse] [--timings FILE] [--launched-ms MS] [--one-table]");
        System.exit(2);
    }
}
