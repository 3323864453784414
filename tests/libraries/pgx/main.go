// pgx v5 pgxpool: the pool takes what poolwarden's Pgx preset writes, as Go durations
// ("30s") in the units pgxpool.Config takes; pgconn reads PGAPPNAME (and the other
// libpq variables) itself. A variable that is unset leaves pgxpool's own default.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pgx-app: "+format+"\n", args...)
	os.Exit(1)
}

func envInt(name string, def int) int {
	raw := strings.TrimSpace(os.Getenv(name))
	if raw == "" {
		return def
	}
	v, err := strconv.Atoi(raw)
	if err != nil {
		fail("%s=%q is not an integer", name, raw)
	}
	return v
}

// envDuration sets *dst from a Go duration in the environment, if set.
func envDuration(name string, dst *time.Duration) {
	raw := strings.TrimSpace(os.Getenv(name))
	if raw == "" {
		return
	}
	d, err := time.ParseDuration(raw)
	if err != nil {
		fail("%s=%q: %v", name, raw, err)
	}
	*dst = d
}

func poolConfig(url string) *pgxpool.Config {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		fail("DATABASE_URL: %v", err)
	}
	if v := envInt("DB_POOL_MIN_CONNS", -1); v >= 0 {
		cfg.MinConns = int32(v)
	}
	if v := envInt("DB_POOL_MAX_CONNS", -1); v >= 0 {
		cfg.MaxConns = int32(v)
	}
	envDuration("DB_POOL_MAX_CONN_IDLE_TIME", &cfg.MaxConnIdleTime)
	envDuration("DB_POOL_MAX_CONN_LIFETIME", &cfg.MaxConnLifetime)
	envDuration("DB_POOL_MAX_CONN_LIFETIME_JITTER", &cfg.MaxConnLifetimeJitter)
	envDuration("DB_POOL_HEALTH_CHECK_PERIOD", &cfg.HealthCheckPeriod)
	return cfg
}

type app struct {
	url     string
	appName string
	pool    *pgxpool.Pool
	mode    string
	mu      sync.Mutex
	held    []any // connections and transactions borrowed and never given back
	extra   []*pgxpool.Pool
	err     string
	traffic *traffic
}

func (a *app) query(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.pool.Exec(ctx, sql); err != nil {
		return err
	}
	a.mu.Lock()
	var second *pgxpool.Pool
	if a.mode == "second-pool" && len(a.extra) > 0 {
		second = a.extra[0]
	}
	a.mu.Unlock()
	if second != nil {
		_, err := second.Exec(ctx, sql)
		return err
	}
	return nil
}

func (a *app) setErr(err error) {
	a.mu.Lock()
	a.err = err.Error()
	a.mu.Unlock()
}

func (a *app) leak() {
	ctx := context.Background()
	limit := envInt("LIBAPP_LEAK_LIMIT", 3)
	const sql = "SELECT count(*) FROM pg_class /* route='/odds/<id>' */"
	switch a.mode {
	case "":
	case "idle":
		for i := 0; i < limit; i++ {
			c, err := a.pool.Acquire(ctx)
			if err != nil {
				a.setErr(err)
				return
			}
			if _, err := c.Exec(ctx, sql); err != nil {
				a.setErr(err)
			}
			a.mu.Lock()
			a.held = append(a.held, c)
			a.mu.Unlock()
		}
	case "idle-in-transaction":
		for i := 0; i < limit; i++ {
			tx, err := a.pool.Begin(ctx)
			if err != nil {
				a.setErr(err)
				return
			}
			if _, err := tx.Exec(ctx, sql); err != nil {
				a.setErr(err)
			}
			a.mu.Lock()
			a.held = append(a.held, tx)
			a.mu.Unlock()
		}
	case "second-pool":
		p, err := pgxpool.New(ctx, a.url) // pgxpool's defaults
		if err != nil {
			a.setErr(err)
			return
		}
		a.mu.Lock()
		a.extra = append(a.extra, p)
		a.mu.Unlock()
	case "engine-per-health-check":
		period := time.Duration(envInt("LIBAPP_HEALTH_CHECK_SECONDS", 5)) * time.Second
		for i := 0; i < limit; i++ {
			p, err := pgxpool.New(ctx, a.url)
			if err == nil {
				_, err = p.Exec(ctx, "SELECT 1")
			}
			if err != nil {
				a.setErr(err)
			} else {
				a.mu.Lock()
				a.extra = append(a.extra, p) // never closed
				a.mu.Unlock()
			}
			time.Sleep(period)
		}
	default:
		fail("LIBAPP_LEAK=%q is not a leak mode", a.mode)
	}
}

func (a *app) report() (map[string]any, error) {
	cfg := a.pool.Config()
	st := a.pool.Stat()
	a.mu.Lock()
	extraOpen := 0
	for _, p := range a.extra {
		extraOpen += int(p.Stat().TotalConns())
	}
	leak := map[string]any{"mode": a.mode, "leaked": len(a.held), "pools": len(a.extra), "pool_connections": extraOpen, "error": a.err}
	a.mu.Unlock()
	return map[string]any{
		"library": "Pgx",
		"driver":  "pgx v5",
		"settings": map[string]any{
			"MinConns":              cfg.MinConns,
			"MaxConns":              cfg.MaxConns,
			"MaxConnIdleTime":       cfg.MaxConnIdleTime.String(),
			"MaxConnLifetime":       cfg.MaxConnLifetime.String(),
			"MaxConnLifetimeJitter": cfg.MaxConnLifetimeJitter.String(),
			"HealthCheckPeriod":     cfg.HealthCheckPeriod.String(),
		},
		"application_name": a.appName,
		"open":             st.TotalConns(),
		"idle":             st.IdleConns(),
		"checked_out":      st.AcquiredConns(),
		"leak":             leak,
		"traffic":          a.traffic.report(),
	}, nil
}

func main() {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		fail("DATABASE_URL is not set")
	}
	mode := strings.TrimSpace(os.Getenv("LIBAPP_LEAK"))
	switch mode {
	case "", "idle", "idle-in-transaction", "second-pool", "engine-per-health-check":
	default:
		fail("LIBAPP_LEAK=%q is not a leak mode", mode)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), poolConfig(url))
	if err != nil {
		fail("pool: %v", err)
	}
	// Asked once: /pool must not acquire a connection, or polling it would be traffic
	// that recycles the pool's connections.
	var appName string
	if err := pool.QueryRow(context.Background(), "SHOW application_name").Scan(&appName); err != nil {
		fail("first query: %v", err)
	}
	a := &app{url: url, appName: appName, pool: pool, mode: mode}
	a.traffic = newTraffic(a.query)
	go a.traffic.run()
	go a.leak()

	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	})
	http.HandleFunc("/pool", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		body, err := a.report()
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			body = map[string]any{"error": err.Error()}
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	ip := os.Getenv("POD_IP")
	if ip == "" {
		ip = "127.0.0.1"
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(envInt("PORT", 8080)))
	fmt.Fprintf(os.Stderr, "pgx-app: listening on %s\n", addr)
	if err := http.ListenAndServe(addr, nil); err != nil {
		fail("%v", err)
	}
}
