package io.poolwarden.libapps;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.Statement;

/**
 * HikariCP without Spring: the pool takes what poolwarden's HikariCP preset writes, in
 * the units HikariConfig takes (milliseconds), and passes PGAPPNAME to pgjdbc as its
 * ApplicationName property (pgjdbc does not read PGAPPNAME). A variable that is unset
 * leaves HikariCP's own default. Started from the same jar:
 * java -Dloader.main=io.poolwarden.libapps.PlainHikari -cp springboot-app.jar
 *   org.springframework.boot.loader.launch.PropertiesLauncher
 */
public final class PlainHikari {
    private PlainHikari() {}

    private static Long env(String name) {
        String raw = System.getenv(name);
        if (raw == null || raw.isBlank()) {
            return null;
        }
        try {
            return Long.parseLong(raw.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + "=" + raw + " is not an integer");
        }
    }

    public static void main(String[] args) throws Exception {
        Jdbc.fromDatabaseUrl();
        HikariConfig cfg = new HikariConfig();
        cfg.setJdbcUrl(Jdbc.url);
        cfg.setUsername(Jdbc.user);
        cfg.setPassword(Jdbc.password);
        Long v;
        if ((v = env("DB_POOL_MIN_IDLE")) != null) {
            cfg.setMinimumIdle(v.intValue());
        }
        if ((v = env("DB_POOL_MAX_SIZE")) != null) {
            cfg.setMaximumPoolSize(v.intValue());
        }
        if ((v = env("DB_POOL_IDLE_TIMEOUT_MS")) != null) {
            cfg.setIdleTimeout(v);
        }
        if ((v = env("DB_POOL_MAX_LIFETIME_MS")) != null) {
            cfg.setMaxLifetime(v);
        }
        String appName = System.getenv("PGAPPNAME");
        if (appName != null && !appName.isBlank()) {
            cfg.addDataSourceProperty("ApplicationName", appName);
        }
        HikariDataSource ds = new HikariDataSource(cfg);
        String reported;
        try (Connection c = ds.getConnection(); Statement s = c.createStatement();
                ResultSet r = s.executeQuery("SHOW application_name")) {
            r.next();
            reported = r.getString(1);
        }
        new Harness(ds, reported, "HikariCP").start();
    }
}
