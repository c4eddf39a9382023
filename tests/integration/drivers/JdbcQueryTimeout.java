// JdbcQueryTimeout.java: one statement under Statement.setQueryTimeout, pgjdbc's own timer that
// sends a CancelRequest when it fires. args: url user password seconds sql. Prints "connected"
// once logged in, runs the statement when a line comes on stdin, then prints one JSON line: what
// the statement ended with, and the next query's value.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class JdbcQueryTimeout {
    public static void main(String[] args) throws Exception {
        try (Connection conn = DriverManager.getConnection(args[0], args[1], args[2])) {
            System.out.println("connected");
            System.out.flush();
            new BufferedReader(new InputStreamReader(System.in)).readLine();
            String outcome;
            try (Statement st = conn.createStatement()) {
                st.setQueryTimeout(Integer.parseInt(args[3]));
                st.executeUpdate(args[4]);
                outcome = "finished";
            } catch (SQLException e) {
                outcome = e.getSQLState();
            }
            int after;
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 41 + 1")) {
                rs.next();
                after = rs.getInt(1);
            }
            System.out.println("{\"outcome\": \"" + outcome + "\", \"after\": " + after + "}");
        }
    }
}
