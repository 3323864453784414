package main

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// traffic: cycles of burst (workers issuing statements back to back), trickle (one
// statement every 500 ms) and quiet (nothing), from LIBAPP_TRAFFIC
// "burst=S,trickle=S,quiet=S" (seconds; empty: no traffic).
type traffic struct {
	query                 func(string) error
	burst, trickle, quiet time.Duration
	workers               int
	mu                    sync.Mutex
	phase                 string
	cycles, statements    int
	errors                int
	lastError             string
}

func newTraffic(query func(string) error) *traffic {
	t := &traffic{query: query, phase: "off", workers: envInt("LIBAPP_BURST_WORKERS", 12)}
	for _, part := range strings.Split(os.Getenv("LIBAPP_TRAFFIC"), ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			fail("LIBAPP_TRAFFIC: %q is not a number of seconds", v)
		}
		d := time.Duration(n) * time.Second
		switch strings.TrimSpace(k) {
		case "burst":
			t.burst = d
		case "trickle":
			t.trickle = d
		case "quiet":
			t.quiet = d
		default:
			fail("LIBAPP_TRAFFIC: unknown phase %q", k)
		}
	}
	return t
}

func (t *traffic) one(sql string) {
	err := t.query(sql)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.errors++
		t.lastError = err.Error()
	} else {
		t.statements++
	}
}

func (t *traffic) setPhase(p string) {
	t.mu.Lock()
	t.phase = p
	t.mu.Unlock()
}

func (t *traffic) run() {
	if t.burst+t.trickle+t.quiet == 0 {
		return
	}
	for {
		t.setPhase("burst")
		end := time.Now().Add(t.burst)
		var wg sync.WaitGroup
		for i := 0; i < t.workers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					t.one("SELECT pg_sleep(0.05)")
				}
			}()
		}
		wg.Wait()
		t.setPhase("trickle")
		end = time.Now().Add(t.trickle)
		for time.Now().Before(end) {
			t.one("SELECT 1")
			time.Sleep(500 * time.Millisecond)
		}
		t.setPhase("quiet")
		time.Sleep(t.quiet)
		t.mu.Lock()
		t.cycles++
		t.mu.Unlock()
	}
}

func (t *traffic) report() map[string]any {
	t.mu.Lock()
	defer t.mu.Unlock()
	return map[string]any{"phase": t.phase, "cycles": t.cycles, "statements": t.statements, "errors": t.errors, "last_error": t.lastError}
}
