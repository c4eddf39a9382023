// JdbcWorkload.java: test_drivers.py's workload with pgjdbc in its default configuration
// (prepareThreshold 5: a PreparedStatement becomes a named server statement on its fifth use,
// binary transfer for the types that support it). args[0] is the JSON spec test_drivers.py
// writes; the results, one object per client, are printed as one JSON line.

import java.io.StringReader;
import java.io.StringWriter;
import java.math.BigDecimal;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.sql.Types;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class JdbcWorkload {
    static Map<String, Object> spec;

    public static void main(String[] args) throws Exception {
        spec = asMap(new JsonReader(args[0]).value());
        int clients = ((Number) spec.get("clients")).intValue();
        List<Map<String, Object>> results = new ArrayList<>();
        Throwable[] failure = new Throwable[1];
        Thread[] threads = new Thread[clients];
        for (int c = 0; c < clients; c++) {
            results.add(null);
            final int client = c;
            threads[c] = new Thread(() -> {
                try {
                    Map<String, Object> r = runClient(client);
                    synchronized (results) {
                        results.set(client, r);
                    }
                } catch (Throwable e) {
                    synchronized (results) {
                        if (failure[0] == null) failure[0] = e;
                    }
                }
            });
            threads[c].start();
        }
        for (Thread thread : threads) thread.join();
        if (failure[0] != null) {
            failure[0].printStackTrace();
            System.exit(1);
        }
        System.out.println(toJson(results));
    }

    /* The spec's statements use $1, $2... each once and in order: JDBC's placeholder is ?. */
    static String sql(String name) {
        return ((String) asMap(spec.get("sql")).get(name)).replaceAll("\\$\\d+", "?");
    }

    static String url(String hostKey, String portKey) {
        return "jdbc:postgresql://" + spec.get(hostKey) + ":" + ((Number) spec.get(portKey)).intValue()
            + "/" + spec.get("database");
    }

    static Connection connect(String hostKey, String portKey) throws SQLException {
        return DriverManager.getConnection(url(hostKey, portKey), (String) spec.get("user"),
                                           (String) spec.get("password"));
    }

    static Map<String, Object> runClient(int client) throws Exception {
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("client", client);
        try (Connection conn = connect("host", "port")) {
            if (!conn.isValid(10)) throw new IllegalStateException("isValid() is false after connect");
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql("settings"))) {
                r.put("settings", rows(rs).get(0));
            }
            List<Object> params = new ArrayList<>();
            try (PreparedStatement ps = conn.prepareStatement(sql("params"))) {
                for (int k = 0; k < intSpec("param_rounds"); k++) {
                    ps.setInt(1, client);
                    ps.setInt(2, k);
                    ps.setString(3, "c" + client + "-" + k);
                    try (ResultSet rs = ps.executeQuery()) {
                        params.add(rows(rs).get(0));
                    }
                }
            }
            r.put("params", params);

            conn.setAutoCommit(false);
            try (PreparedStatement ps = conn.prepareStatement(sql("insert"))) {
                for (int k = 0; k < intSpec("committed_rows"); k++) insert(ps, client, k, "c" + client + "-" + k);
                conn.commit();
                for (int k = 100; k < 105; k++) insert(ps, client, k, "rolled back");
                conn.rollback();
                insert(ps, client, 200, "failed transaction");
            }
            try (PreparedStatement ps = conn.prepareStatement(sql("divide"))) {
                ps.setInt(1, 0);
                ps.executeQuery().close();
                r.put("error", null);
            } catch (SQLException e) {
                r.put("error", e.getSQLState());
            }
            conn.rollback();
            conn.setAutoCommit(true);

            try (PreparedStatement ps = conn.prepareStatement(sql("own_rows"))) {
                ps.setInt(1, client);
                try (ResultSet rs = ps.executeQuery()) {
                    r.put("rows", rows(rs));
                }
            }
            try (PreparedStatement ps = conn.prepareStatement(sql("large"))) {
                ps.setInt(1, client);
                long count = 0, sum = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        count++;
                        sum += rs.getInt(1);
                    }
                }
                r.put("large", Arrays.asList(count, sum));
            }
            r.put("large_fetched", largeFetched(conn, client));
            r.put("types", types(conn, client));
            try (PreparedStatement ps = conn.prepareStatement(sql("nulls"))) {
                ps.setNull(1, Types.VARCHAR);
                ps.setNull(2, Types.INTEGER);
                ps.setNull(3, Types.VARCHAR);
                try (ResultSet rs = ps.executeQuery()) {
                    r.put("nulls", rows(rs).get(0));
                }
            }
            r.put("batch", batch(conn, client));
            r.put("bad_batch", badBatch(conn, client));
            r.put("big", big(conn, client));
            r.put("copy", copy(conn, client));
            r.put("cancel", cancel(conn, client));
            // What connection pools (HikariCP...) ask before lending a connection: an empty query.
            if (!conn.isValid(10)) throw new IllegalStateException("isValid() is false after the cancel");
            try (PreparedStatement ps = conn.prepareStatement(sql("after"))) {
                ps.setInt(1, client);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    r.put("after_cancel", rs.getInt(1));
                }
            }
        }
        return r;
    }

    static int intSpec(String name) {
        return ((Number) spec.get(name)).intValue();
    }

    static void insert(PreparedStatement ps, int client, int k, String v) throws SQLException {
        ps.setInt(1, client);
        ps.setInt(2, k);
        ps.setString(3, v);
        ps.executeUpdate();
    }

    /* setFetchSize outside autocommit: a named portal, Execute with a row limit, again and again. */
    static List<Object> largeFetched(Connection conn, int client) throws SQLException {
        conn.setAutoCommit(false);
        long count = 0, sum = 0;
        try (PreparedStatement ps = conn.prepareStatement(sql("large"))) {
            ps.setFetchSize(1000);
            ps.setInt(1, client);
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) {
                    count++;
                    sum += rs.getInt(1);
                }
            }
        }
        conn.commit();
        conn.setAutoCommit(true);
        return Arrays.asList(count, sum);
    }

    /* The types query run past the prepare threshold, so that its results come in binary. */
    static List<Object> types(Connection conn, int client) throws SQLException {
        List<Object> out = null;
        try (PreparedStatement ps = conn.prepareStatement(sql("types"))) {
            for (int round = 0; round < 6; round++) {
                ps.setInt(1, client);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    Timestamp ts = rs.getTimestamp(4);
                    Object nothing = rs.getObject(6);
                    out = Arrays.asList(rs.getInt(1), hex(rs.getBytes(2)), rs.getBigDecimal(3).toPlainString(),
                                        ts.getTime(), rs.getString(5), nothing, rs.getString(7));
                }
            }
        }
        return out;
    }

    /* executeBatch: every Bind/Execute of the batch is sent before the one Sync at its end. */
    @SuppressWarnings("unchecked")
    static List<Object> batch(Connection conn, int client) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(sql("batch"))) {
            for (int k = 1; k <= intSpec("batch_rows"); k++) {
                ps.setInt(1, client);
                ps.setInt(2, k);
                ps.setString(3, "c" + client + "-batch-" + k);
                ps.addBatch();
            }
            ps.executeBatch();
        }
        try (PreparedStatement ps = conn.prepareStatement(sql("batch_check"))) {
            ps.setInt(1, client);
            try (ResultSet rs = ps.executeQuery()) {
                return (List<Object>) rows(rs).get(0);
            }
        }
    }

    /* A batch in autocommit mode whose third row breaks the key: nothing of it stays. */
    static List<Object> badBatch(Connection conn, int client) throws SQLException {
        String sqlstate = null;
        try (PreparedStatement ps = conn.prepareStatement(sql("batch"))) {
            for (Object key : (List<?>) spec.get("bad_batch_keys")) {
                int k = ((Number) key).intValue();
                ps.setInt(1, client);
                ps.setInt(2, k);
                ps.setString(3, "c" + client + "-batch-" + k);
                ps.addBatch();
            }
            ps.executeBatch();
        } catch (BatchUpdateException e) {
            SQLException cause = e.getNextException() != null ? e.getNextException() : e;
            sqlstate = cause.getSQLState();
        }
        try (PreparedStatement ps = conn.prepareStatement(sql("batch_count"))) {
            ps.setInt(1, client);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return Arrays.asList(sqlstate, rs.getInt(1));
            }
        }
    }

    static List<Object> big(Connection conn, int client) throws SQLException {
        byte[] value = new byte[intSpec("big_bytes")];
        for (int i = 0; i < value.length; i++) value[i] = (byte) ((7 * i + client) % 256);
        try (PreparedStatement ps = conn.prepareStatement(sql("big"))) {
            ps.setBytes(1, value);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return Arrays.asList(rs.getString(1), rs.getInt(2), Arrays.equals(value, rs.getBytes(3)));
            }
        }
    }

    static String hex(byte[] bytes) {
        StringBuilder sb = new StringBuilder();
        for (byte b : bytes) sb.append(String.format("%02x", b));
        return sb.toString();
    }

    static List<Object> copy(Connection conn, int client) throws Exception {
        CopyManager copy = conn.unwrap(PGConnection.class).getCopyAPI();
        StringBuilder data = new StringBuilder();
        int rows = intSpec("copy_rows");
        for (int k = 1; k <= rows; k++) data.append(client).append('\t').append(k).append("\tc").append(client)
            .append("-copy-").append(k).append('\n');
        copy.copyIn(sql("copy_in"), new StringReader(data.toString()));
        StringWriter out = new StringWriter();
        copy.copyOut((String) ((List<?>) spec.get("copy_out")).get(client), out);
        long count = 0, sum = 0, wrong = 0;
        for (String line : out.toString().split("\n")) {
            if (line.isEmpty()) continue;
            String[] f = line.split("\t");
            count++;
            sum += Integer.parseInt(f[1]);
            if (Integer.parseInt(f[0]) != client || !f[2].equals("c" + client + "-copy-" + f[1])) wrong++;
        }
        return Arrays.asList(count, sum, wrong);
    }

    /* Statement.cancel from another thread once the query runs on a backend (it may first wait). */
    static String cancel(Connection conn, int client) throws Exception {
        String sleep = (String) ((List<?>) spec.get("sleep")).get(client);
        try (Statement st = conn.createStatement()) {
            Throwable[] cancelFailure = new Throwable[1];
            Thread canceller = new Thread(() -> {
                try {
                    waitUntilRunning(sleep);
                    st.cancel();
                } catch (Throwable e) {
                    cancelFailure[0] = e;
                }
            });
            canceller.start();
            String outcome;
            try {
                st.executeQuery(sleep).close();
                outcome = "finished";
            } catch (SQLException e) {
                outcome = e.getSQLState();
            }
            canceller.join();
            if (cancelFailure[0] != null) throw new RuntimeException(cancelFailure[0]);
            return outcome;
        }
    }

    static void waitUntilRunning(String sleep) throws Exception {
        try (Connection monitor = connect("monitor_host", "monitor_port");
             PreparedStatement ps = monitor.prepareStatement(
                 "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query = ?")) {
            ps.setString(1, sleep);
            for (int i = 0; i < 1200; i++) {
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    if (rs.getLong(1) > 0) return;
                }
                Thread.sleep(50);
            }
        }
        throw new RuntimeException("the query " + sleep + " never ran");
    }

    static List<Object> rows(ResultSet rs) throws SQLException {
        List<Object> out = new ArrayList<>();
        ResultSetMetaData md = rs.getMetaData();
        while (rs.next()) {
            List<Object> row = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) row.add(rs.getObject(i));
            out.add(row);
        }
        return out;
    }

    // ---- a little JSON, enough for the spec and the results ----

    @SuppressWarnings("unchecked")
    static Map<String, Object> asMap(Object o) {
        return (Map<String, Object>) o;
    }

    static String toJson(Object o) {
        if (o == null) return "null";
        if (o instanceof String) {
            StringBuilder sb = new StringBuilder("\"");
            for (char ch : ((String) o).toCharArray()) {
                if (ch == '"' || ch == '\\') sb.append('\\').append(ch);
                else if (ch < 0x20) sb.append(String.format("\\u%04x", (int) ch));
                else sb.append(ch);
            }
            return sb.append('"').toString();
        }
        if (o instanceof Boolean || o instanceof Integer || o instanceof Long || o instanceof Short) return o.toString();
        if (o instanceof BigDecimal) return ((BigDecimal) o).toPlainString();
        if (o instanceof List) {
            List<String> parts = new ArrayList<>();
            for (Object item : (List<?>) o) parts.add(toJson(item));
            return "[" + String.join(",", parts) + "]";
        }
        if (o instanceof Map) {
            List<String> parts = new ArrayList<>();
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) parts.add(toJson(e.getKey().toString()) + ":" + toJson(e.getValue()));
            return "{" + String.join(",", parts) + "}";
        }
        return toJson(o.toString());
    }

    static class JsonReader {
        final String s;
        int i = 0;

        JsonReader(String s) {
            this.s = s;
        }

        void skip() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++;
        }

        Object value() {
            skip();
            char ch = s.charAt(i);
            if (ch == '{') {
                Map<String, Object> map = new LinkedHashMap<>();
                i++;
                skip();
                if (s.charAt(i) == '}') { i++; return map; }
                while (true) {
                    skip();
                    String key = (String) value();
                    skip();
                    i++; // ':'
                    map.put(key, value());
                    skip();
                    if (s.charAt(i++) == '}') return map;
                }
            }
            if (ch == '[') {
                List<Object> list = new ArrayList<>();
                i++;
                skip();
                if (s.charAt(i) == ']') { i++; return list; }
                while (true) {
                    list.add(value());
                    skip();
                    if (s.charAt(i++) == ']') return list;
                }
            }
            if (ch == '"') {
                StringBuilder sb = new StringBuilder();
                i++;
                while (s.charAt(i) != '"') {
                    char c = s.charAt(i++);
                    if (c == '\\') {
                        char e = s.charAt(i++);
                        switch (e) {
                            case 'n': sb.append('\n'); break;
                            case 't': sb.append('\t'); break;
                            case 'r': sb.append('\r'); break;
                            case 'b': sb.append('\b'); break;
                            case 'f': sb.append('\f'); break;
                            case 'u': sb.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
                            default: sb.append(e);
                        }
                    } else {
                        sb.append(c);
                    }
                }
                i++;
                return sb.toString();
            }
            Matcher m = Pattern.compile("-?\\d+(\\.\\d+)?([eE][-+]?\\d+)?|true|false|null").matcher(s);
            if (!m.find(i) || m.start() != i) throw new IllegalArgumentException("bad JSON at " + i);
            i = m.end();
            String t = m.group();
            if (t.equals("true")) return Boolean.TRUE;
            if (t.equals("false")) return Boolean.FALSE;
            if (t.equals("null")) return null;
            return t.contains(".") || t.contains("e") || t.contains("E") ? (Object) Double.parseDouble(t) : (Object) Long.parseLong(t);
        }
    }
}
