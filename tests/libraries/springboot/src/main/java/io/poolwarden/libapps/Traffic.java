package io.poolwarden.libapps;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The built-in traffic: cycles of a burst (LIBAPP_BURST_WORKERS threads issuing
 * statements back to back, more than the pool's maximum), a trickle (one statement
 * every 500 ms) and a quiet period (nothing). LIBAPP_TRAFFIC is
 * "burst=S,trickle=S,quiet=S" in seconds; empty means no traffic.
 */
final class Traffic {
    interface Query {
        void run(String sql) throws Exception;
    }

    private final Query query;
    private final long burst, trickle, quiet;
    private final int workers = Integer.parseInt(System.getenv().getOrDefault("LIBAPP_BURST_WORKERS", "12"));
    private volatile String phase = "off";
    private final AtomicLong cycles = new AtomicLong();
    private final AtomicLong statements = new AtomicLong();
    private final AtomicLong errors = new AtomicLong();
    private volatile String lastError = "";

    Traffic(String spec, Query query) {
        this.query = query;
        long b = 0, t = 0, q = 0;
        for (String part : spec.split(",")) {
            String[] kv = part.trim().split("=", 2);
            if (kv.length != 2) {
                continue;
            }
            long v = Long.parseLong(kv[1].trim());
            switch (kv[0].trim()) {
                case "burst" -> b = v;
                case "trickle" -> t = v;
                case "quiet" -> q = v;
                default -> throw new IllegalArgumentException("LIBAPP_TRAFFIC: unknown phase " + kv[0]);
            }
        }
        burst = b;
        trickle = t;
        quiet = q;
    }

    void start() {
        if (burst + trickle + quiet == 0) {
            return;
        }
        Thread t = new Thread(this::loop, "traffic");
        t.setDaemon(true);
        t.start();
    }

    private void one(String sql) {
        try {
            query.run(sql);
            statements.incrementAndGet();
        } catch (Exception e) {
            errors.incrementAndGet();
            lastError = e.toString();
        }
    }

    private void loop() {
        while (true) {
            phase = "burst";
            long end = System.nanoTime() + burst * 1_000_000_000L;
            List<Thread> ts = new ArrayList<>();
            for (int i = 0; i < workers; i++) {
                Thread w = new Thread(() -> {
                    while (System.nanoTime() < end) {
                        one("SELECT pg_sleep(0.05)");
                    }
                });
                w.start();
                ts.add(w);
            }
            for (Thread w : ts) {
                try {
                    w.join();
                } catch (InterruptedException e) {
                    return;
                }
            }
            phase = "trickle";
            long tEnd = System.nanoTime() + trickle * 1_000_000_000L;
            while (System.nanoTime() < tEnd) {
                one("SELECT 1");
                sleep(500);
            }
            phase = "quiet";
            sleep(quiet * 1000);
            cycles.incrementAndGet();
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    String json() {
        return "{\"phase\":\"" + phase + "\",\"cycles\":" + cycles.get() + ",\"statements\":" + statements.get()
                + ",\"errors\":" + errors.get() + ",\"last_error\":" + Json.str(lastError) + "}";
    }
}
