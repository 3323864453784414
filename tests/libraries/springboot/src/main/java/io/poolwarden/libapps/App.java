package io.poolwarden.libapps;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import com.zaxxer.hikari.HikariConfigMXBean;
import com.zaxxer.hikari.HikariDataSource;
import com.zaxxer.hikari.HikariPoolMXBean;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Executors;
import javax.sql.DataSource;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.context.ConfigurableApplicationContext;

/**
 * A Spring Boot service whose only pool is the one Spring Boot auto-configures:
 * HikariCP, configured by Spring's own binding of SPRING_DATASOURCE_HIKARI_* from the
 * environment. The app adds nothing to the pool's settings; it reports them as the
 * running HikariCP does (its config MXBean), serves /healthz and /pool, runs the
 * built-in traffic and, when asked by LIBAPP_LEAK, leaks the way the seeds did.
 */
@SpringBootApplication
public class App {
    public static void main(String[] args) throws Exception {
        Jdbc.fromDatabaseUrl();
        ConfigurableApplicationContext ctx = SpringApplication.run(App.class, args);
        HikariDataSource ds = (HikariDataSource) ctx.getBean(DataSource.class);
        // Spring Boot's pool starts lazily: open it as a service would on its first
        // request. Asked once: /pool must not borrow a connection, or polling it would
        // be traffic that recycles the pool's connections.
        String appName;
        try (Connection c = ds.getConnection(); Statement s = c.createStatement();
                ResultSet r = s.executeQuery("SHOW application_name")) {
            r.next();
            appName = r.getString(1);
        }
        Harness h = new Harness(ds, appName, "SpringBoot");
        h.start();
    }
}

/** DATABASE_URL (postgres://user:pass@host:port/db) as Spring's spring.datasource.* properties. */
final class Jdbc {
    static String url;
    static String user;
    static String password;

    static void fromDatabaseUrl() {
        String env = System.getenv("DATABASE_URL");
        if (env == null) {
            return;
        }
        URI u = URI.create(env);
        String userInfo = u.getRawUserInfo();
        if (userInfo != null) {
            String[] parts = userInfo.split(":", 2);
            user = URLDecoder.decode(parts[0], StandardCharsets.UTF_8);
            if (parts.length == 2) {
                password = URLDecoder.decode(parts[1], StandardCharsets.UTF_8);
            }
        }
        int port = u.getPort() > 0 ? u.getPort() : 5432;
        String query = u.getRawQuery() == null ? "" : "?" + u.getRawQuery();
        url = "jdbc:postgresql://" + u.getHost() + ":" + port + u.getRawPath() + query;
        if (System.getenv("SPRING_DATASOURCE_URL") != null) {
            return;
        }
        System.setProperty("spring.datasource.url", url);
        if (user != null) {
            System.setProperty("spring.datasource.username", user);
        }
        if (password != null) {
            System.setProperty("spring.datasource.password", password);
        }
    }
}

/** The parts every library's app has: HTTP, traffic, leaks. */
final class Harness {
    private final HikariDataSource ds;
    private final Traffic traffic;
    private final List<Connection> leaked = new ArrayList<>();
    private final List<HikariDataSource> extraPools = new ArrayList<>();
    private final String leak = System.getenv().getOrDefault("LIBAPP_LEAK", "");
    private final int leakLimit = Integer.parseInt(System.getenv().getOrDefault("LIBAPP_LEAK_LIMIT", "3"));
    private String leakError = "";

    private final String appName;
    private final String library;

    Harness(HikariDataSource ds, String appName, String library) {
        this.ds = ds;
        this.appName = appName;
        this.library = library;
        this.traffic = new Traffic(System.getenv().getOrDefault("LIBAPP_TRAFFIC", ""), this::query);
    }

    void start() throws IOException {
        String ip = System.getenv().getOrDefault("POD_IP", "127.0.0.1");
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8080"));
        HttpServer server = HttpServer.create(new InetSocketAddress(ip, port), 64);
        server.setExecutor(Executors.newFixedThreadPool(4));
        server.createContext("/healthz", ex -> reply(ex, 200, "{\"ok\":true}"));
        server.createContext("/pool", ex -> {
            try {
                reply(ex, 200, pool());
            } catch (Exception e) {
                reply(ex, 503, "{\"error\":" + Json.str(e.toString()) + "}");
            }
        });
        startLeak();
        traffic.start();
        server.start();
        System.err.println("springboot-app: listening on " + ip + ":" + port + ", leak=" + leak);
    }

    /** One statement through the app's pool, or the second pool too when it leaks that way. */
    private void query(String sql) throws SQLException {
        try (Connection c = ds.getConnection(); Statement s = c.createStatement()) {
            s.execute(sql);
        }
        if (leak.equals("second-pool")) {
            HikariDataSource second;
            synchronized (this) {
                second = extraPools.isEmpty() ? null : extraPools.get(0);
            }
            if (second != null) {
                try (Connection c = second.getConnection(); Statement s = c.createStatement()) {
                    s.execute(sql);
                }
            }
        }
    }

    /** A pool as an app writes one by hand: the same database and name, HikariCP's defaults. */
    private HikariDataSource unconfiguredPool() {
        HikariDataSource p = new HikariDataSource();
        p.setJdbcUrl(ds.getJdbcUrl());
        p.setUsername(ds.getUsername());
        p.setPassword(ds.getPassword());
        p.setDataSourceProperties((Properties) ds.getDataSourceProperties().clone());
        return p;
    }

    /**
     * Leaks the way LIBAPP_LEAK says. Its first step runs before the HTTP server
     * starts, so a pod that is ready has begun to leak; later health checks follow in
     * the background.
     */
    private void startLeak() {
        try {
            switch (leak) {
                case "" -> { }
                case "idle", "idle-in-transaction" -> {
                    for (int i = 0; i < leakLimit; i++) {
                        Connection c = ds.getConnection();
                        if (leak.equals("idle-in-transaction")) {
                            c.setAutoCommit(false);
                        }
                        try (Statement s = c.createStatement()) {
                            s.execute("SELECT count(*) FROM pg_class /* route='/odds/<id>' */");
                        }
                        synchronized (this) {
                            leaked.add(c);
                        }
                    }
                }
                case "second-pool" -> {
                    HikariDataSource p = unconfiguredPool();
                    try (Connection c = p.getConnection()) {
                        c.isValid(5);
                    }
                    synchronized (this) {
                        extraPools.add(p);
                    }
                }
                case "engine-per-health-check" -> {
                    healthCheck();
                    int period = Integer.parseInt(System.getenv().getOrDefault("LIBAPP_HEALTH_CHECK_SECONDS", "5"));
                    Thread t = new Thread(() -> {
                        try {
                            for (int i = 1; i < leakLimit; i++) {
                                Thread.sleep(period * 1000L);
                                healthCheck();
                            }
                        } catch (Exception e) {
                            leakFailed(e);
                        }
                    }, "leak");
                    t.setDaemon(true);
                    t.start();
                }
                default -> throw new IllegalArgumentException("unknown LIBAPP_LEAK " + leak);
            }
        } catch (Exception e) {
            leakFailed(e);
        }
    }

    /** The seeds' health check: a new pool each time, one statement, never closed. */
    private void healthCheck() throws SQLException {
        HikariDataSource p = unconfiguredPool();
        try (Connection c = p.getConnection(); Statement s = c.createStatement()) {
            s.execute("SELECT 1");
        }
        synchronized (this) {
            extraPools.add(p);
        }
    }

    private synchronized void leakFailed(Exception e) {
        leakError = e.toString();
        System.err.println("springboot-app: leak: " + e);
    }

    private String pool() {
        HikariConfigMXBean cfg = ds.getHikariConfigMXBean();
        HikariPoolMXBean live = ds.getHikariPoolMXBean();
        int extraOpen = 0;
        int leakedCount;
        String err;
        synchronized (this) {
            for (HikariDataSource p : extraPools) {
                extraOpen += p.getHikariPoolMXBean() == null ? 0 : p.getHikariPoolMXBean().getTotalConnections();
            }
            leakedCount = leaked.size();
            err = leakError;
        }
        return "{\"library\":" + Json.str(library) + ",\"driver\":" + Json.str("HikariCP")
                + ",\"settings\":{\"minimumIdle\":" + cfg.getMinimumIdle()
                + ",\"maximumPoolSize\":" + cfg.getMaximumPoolSize()
                + ",\"idleTimeoutMs\":" + cfg.getIdleTimeout()
                + ",\"maxLifetimeMs\":" + cfg.getMaxLifetime()
                + ",\"dataSourceProperties\":" + Json.str(String.valueOf(ds.getDataSourceProperties()))
                + "},\"application_name\":" + Json.str(appName)
                + ",\"open\":" + live.getTotalConnections()
                + ",\"idle\":" + live.getIdleConnections()
                + ",\"checked_out\":" + live.getActiveConnections()
                + ",\"leak\":{\"mode\":" + Json.str(leak) + ",\"leaked\":" + leakedCount + ",\"pools\":" + extraPools.size()
                + ",\"pool_connections\":" + extraOpen + ",\"error\":" + Json.str(err) + "}"
                + ",\"traffic\":" + traffic.json() + "}";
    }

    private static void reply(HttpExchange ex, int code, String body) throws IOException {
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("content-type", "application/json");
        ex.sendResponseHeaders(code, b.length);
        try (OutputStream o = ex.getResponseBody()) {
            o.write(b);
        }
    }
}
