// pgjdbc through sluice: server-side prepared statements from the first use
// (prepareThreshold=1), batches, reWriteBatchedInserts. Runs the cases named on the command
// line; prints `ok <case>` / `FAIL <case>: <why>` and exits 1 if any failed.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Properties;
import java.util.Set;

public class PgjdbcSuite {
    static final int PRIMARY = Integer.parseInt(System.getenv("SLUICE_PRIMARY_PORT"));
    static final Set<Integer> REPLICAS = new HashSet<>();

    static {
        for (String p : System.getenv("SLUICE_REPLICA_PORTS").split(",")) {
            if (!p.isEmpty()) REPLICAS.add(Integer.parseInt(p));
        }
    }

    /** user and password from SLUICE_URL (postgresql://user:password@host:port/db). */
    static Connection connect(String extra) throws Exception {
        java.net.URI uri = new java.net.URI(System.getenv("SLUICE_URL"));
        String[] userInfo = uri.getRawUserInfo().split(":", 2);
        Properties props = new Properties();
        props.setProperty("user", java.net.URLDecoder.decode(userInfo[0], "UTF-8"));
        props.setProperty("password", java.net.URLDecoder.decode(userInfo[1], "UTF-8"));
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "60");
        String url = "jdbc:postgresql://" + System.getenv("SLUICE_HOST") + ":" + System.getenv("SLUICE_PORT")
                + uri.getPath() + "?" + extra;
        return DriverManager.getConnection(url, props);
    }

    static String node(int port) {
        if (port == PRIMARY) return "primary";
        if (REPLICAS.contains(port)) return "replica";
        throw new AssertionError("port " + port + " is no node of the cluster");
    }

    static void check(boolean cond, String msg) {
        if (!cond) throw new AssertionError(msg);
    }

    static int intOf(PreparedStatement ps) throws Exception {
        try (ResultSet rs = ps.executeQuery()) {
            check(rs.next(), "no row");
            return rs.getInt(1);
        }
    }

    static void eventuallyOnReplica(PreparedStatement port) throws Exception {
        long deadline = System.currentTimeMillis() + 10000;
        while (System.currentTimeMillis() < deadline) {
            if (node(intOf(port)).equals("replica")) return;
            Thread.sleep(50);
        }
        throw new AssertionError("never: a read on a replica");
    }

    static void prepareThreshold() throws Exception {
        try (Connection c = connect("prepareThreshold=1")) {
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::int * 3")) {
                for (int i = 0; i < 50; i++) {
                    ps.setInt(1, i);
                    check(intOf(ps) == i * 3, "prepared SELECT returned a wrong value");
                }
            }
            try (PreparedStatement port = c.prepareStatement("SELECT inet_server_port()")) {
                eventuallyOnReplica(port);
            }
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO items (v) VALUES (?) RETURNING inet_server_port()")) {
                ins.setString(1, "jdbc");
                check(node(intOf(ins)).equals("primary"), "a prepared INSERT ran off the primary");
            }
        }
    }

    static void batch(String extra, String tag) throws Exception {
        try (Connection c = connect(extra)) {
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO items (v, n) VALUES (?, ?)")) {
                for (int i = 0; i < 1000; i++) {
                    ps.setString(1, tag);
                    ps.setInt(2, i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                int total = Arrays.stream(counts).map(n -> n == Statement.SUCCESS_NO_INFO ? 1 : n).sum();
                check(total == 1000, "the batch reported " + total + " rows");
            }
            c.commit();
            c.setAutoCommit(true);
            try (PreparedStatement count = c.prepareStatement(
                    "/* sluice: primary */ SELECT count(*)::int FROM items WHERE v = ?")) {
                count.setString(1, tag);
                check(intOf(count) == 1000, "the batch left a wrong row count");
            }
        }
    }

    static String show(Connection c) throws Exception {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SHOW work_mem")) {
            check(rs.next(), "no row");
            return rs.getString(1);
        }
    }

    /** Autocommit off, a SET as each transaction's first statement (pgjdbc sends BEGIN with it,
     * in one unit): it lasts if the transaction commits. The Rust side checks that no session
     * was pinned for it. */
    static void setInTransactions() throws Exception {
        try (Connection c = connect("")) {
            c.setAutoCommit(false);
            String want = show(c);
            c.commit();
            for (int i = 1; i <= 5; i++) {
                try (Statement s = c.createStatement()) {
                    s.execute("SET work_mem = '" + i + "MB'");
                }
                check(show(c).equals(i + "MB"), "round " + i + ": the SET is not seen in its transaction");
                if (i == 3) {
                    c.rollback();
                } else {
                    c.commit();
                    want = i + "MB";
                }
                check(show(c).equals(want), "round " + i + ": work_mem " + show(c) + ", want " + want);
                c.commit();
            }
        }
    }

    public static void main(String[] args) {
        int failed = 0;
        for (String name : args) {
            try {
                switch (name) {
                    case "prepare_threshold": prepareThreshold(); break;
                    case "set_in_transactions": setInTransactions(); break;
                    case "batches": batch("prepareThreshold=1", "jbatch"); break;
                    case "rewrite_batched_inserts": batch("reWriteBatchedInserts=true", "jrewrite"); break;
                    default: throw new IllegalArgumentException("no case " + name);
                }
                System.out.println("ok " + name);
            } catch (Throwable e) {
                failed++;
                System.out.println("FAIL " + name + ": " + e);
                e.printStackTrace(System.out);
            }
        }
        System.exit(failed == 0 ? 0 : 1);
    }
}
