package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/traverse/traverse/internal/pgtest"
	"github.com/traverse/traverse/store"
	_ "github.com/traverse/traverse/store/postgres" // the PostgreSQL issuer
	_ "github.com/traverse/traverse/store/sqlite"   // the SQLite issuer
)

// issuerEnv is an issuer-only `traverse serve` whose store holds many
// accounts, and the credentials wrk cycles through.
type issuerEnv struct {
	backend string // "SQLite", "PostgreSQL"
	srv     *traverseServer
	creds   [][2]string // account SID, auth token
	// dir and dsn start the server again (profiled).
	dir, dsn string
}

// startIssuer fills a store with n accounts, directly through store.Store
// (as `traverse accounts create` would, without a process each), then
// serves the issuer on it. pg is the PostgreSQL cluster, nil for SQLite.
func startIssuer(ctx context.Context, bin, dir string, o opts, pg *pgtest.Cluster, n int) (*issuerEnv, error) {
	e := &issuerEnv{backend: "SQLite"}
	dsn := "sqlite:" + filepath.Join(dir, "traverse.db")
	if pg != nil {
		e.backend = "PostgreSQL"
		var err error
		if dsn, err = pg.CreateDatabase(ctx, "bench"); err != nil {
			return nil, err
		}
	}
	key, err := store.LoadOrCreateKey(dir, "")
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, dsn, key)
	if err != nil {
		return nil, err
	}
	e.creds = make([][2]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				now := time.Now().UTC().Truncate(time.Second)
				a := store.Account{Sid: "AC" + randomHex(16), FriendlyName: fmt.Sprintf("bench %d", i),
					AuthToken: randomHex(16), Status: store.StatusActive, DateCreated: now, DateUpdated: now}
				if err := st.CreateAccount(ctx, a); err != nil {
					errs <- err
					return
				}
				e.creds[i] = [2]string{a.Sid, a.AuthToken}
			}
		}()
	}
	wg.Wait()
	close(errs)
	_ = st.Close()
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("fill the %s store: %w", e.backend, err)
	}
	e.dir, e.dsn = dir, dsn
	e.srv, err = startTraverse(ctx, bin, dir, o, travSetup{issuer: true, dsn: dsn})
	return e, err
}

// profiled replaces the issuer's server, with --profile, by one that writes
// this round's profile; the caller stops it after the round. The store,
// and so the credentials, stay.
func (e *issuerEnv) profiled(ctx context.Context, o opts, round int) error {
	if o.profile == "" {
		return nil
	}
	e.srv.stop()
	path := o.profilePath("issuer "+e.backend, round)
	s, err := startTraverse(ctx, o.traverse, e.dir, o, travSetup{issuer: true, dsn: e.dsn, profile: path})
	if err != nil {
		return fmt.Errorf("issuer on %s: %w", e.backend, err)
	}
	e.srv = s
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// issuerResult is wrk's measure of the Tokens resource.
type issuerResult struct {
	PerSec    float64
	P50Millis float64
	P99Millis float64
	Non2xx    int64
	Errors    int64
}

// runIssuer drives POST .../Tokens.json with wrk for dur, each request as
// the next of the store's accounts in turn.
func runIssuer(ctx context.Context, e *issuerEnv, dir string, dur time.Duration) (issuerResult, error) {
	var r issuerResult
	var lua strings.Builder
	lua.WriteString("local creds = {\n")
	for _, c := range e.creds {
		fmt.Fprintf(&lua, "{%q,%q},\n", c[0], base64.StdEncoding.EncodeToString([]byte(c[0]+":"+c[1])))
	}
	// Requests are formatted once per thread: a request() that calls
	// wrk.format each time costs wrk CPU the issuer shares the cores with.
	lua.WriteString(`}
local reqs = {}
local i = 0
init = function(args)
  for k, c in ipairs(creds) do
    reqs[k] = wrk.format("POST", "/2010-04-01/Accounts/" .. c[1] .. "/Tokens.json",
      {["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = "Basic " .. c[2]}, "Ttl=3600")
  end
end
request = function()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end
`)
	script := filepath.Join(dir, "tokens.lua")
	if err := os.WriteFile(script, []byte(lua.String()), 0o600); err != nil {
		return r, err
	}
	cctx, cancel := context.WithTimeout(ctx, dur+30*time.Second)
	defer cancel()
	secs := strconv.Itoa(int(dur.Seconds()))
	// One wrk thread: it alone drives 16 connections faster than the issuer
	// answers them, and a second would contend with the issuer for this
	// machine's two cores; a wrk thread waiting for a core delays the reading
	// of its connections' answers, which wrk then counts as the issuer's
	// latency (p99 10.9-12.2 ms with -t2 against 5.1-5.6 ms with -t1, at the
	// same rate).
	out, err := exec.CommandContext(cctx, "wrk", "-t1", "-c16", "-d"+secs+"s", "--timeout", "5s", "--latency", "-s", script, e.srv.issuer).CombinedOutput()
	if err != nil {
		return r, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	text := string(out)
	if m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindStringSubmatch(text); m != nil {
		r.PerSec, _ = strconv.ParseFloat(m[1], 64)
	} else {
		return r, fmt.Errorf("wrk printed no Requests/sec:\n%s", text)
	}
	r.P50Millis = wrkLatency(text, "50%")
	r.P99Millis = wrkLatency(text, "99%")
	if m := regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`).FindStringSubmatch(text); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`).FindStringSubmatch(text); m != nil {
		for _, v := range m[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			r.Errors += n
		}
	}
	return r, nil
}

// issuerMetric names an issuer row for a backend.
func issuerMetric(backend, what string, accounts int) string {
	return fmt.Sprintf("issuer (%s, %d accounts): %s", backend, accounts, what)
}

func (r *report) addIssuer(backend string, accounts int, i issuerResult) {
	short := "Tokens/s " + backend
	r.add(issuerMetric(backend, "Tokens created/s (wrk, 16 connections)", accounts), short, "/s", true, "traverse", i.PerSec)
	r.add(issuerMetric(backend, "Tokens p50 latency", accounts), "", "ms", false, "traverse", i.P50Millis)
	r.add(issuerMetric(backend, "Tokens p99 latency", accounts), "", "ms", false, "traverse", i.P99Millis)
	r.add(issuerMetric(backend, "non-2xx responses and socket errors", accounts), "", "", false, "traverse", float64(i.Non2xx+i.Errors))
}
