package issuer_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/issuer"
	"github.com/traverse/traverse/store"
	_ "github.com/traverse/traverse/store/sqlite"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// t0 is the fixed clock of the tests: Twilio's example date.
var t0 = time.Date(2020, 5, 1, 1, 42, 57, 0, time.UTC)

const testSecret = "a-turn-rest-secret-for-tests"

// policy is what the relay would verify with.
var policy = auth.Policy{MaxTTL: 24 * time.Hour, ClockSkew: 30 * time.Second}

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// fixture is one issuer node on a real loopback socket with a real SQLite
// database in a temporary directory.
type fixture struct {
	t       *testing.T
	dir     string
	store   store.Store
	svc     *issuer.Service
	srv     *httptest.Server
	reg     *prometheus.Registry
	secrets *auth.Secrets
	clock   *clock
	logs    *observer.ObservedLogs
	acct    store.Account // the primary account
}

var testURIs = issuer.DefaultURIs("203.0.113.7", 3478, 3478, 443)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newNode(t, t.TempDir())
}

// newNode opens the store in dir (shared by nodes given the same dir) and
// serves an issuer on it; edits adjust its Options.
func newNode(t testing.TB, dir string, edits ...func(*issuer.Options)) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenConfigured(ctx, dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	f := &fixture{
		dir:     dir,
		store:   st,
		reg:     prometheus.NewRegistry(),
		secrets: auth.NewSecrets([]string{testSecret}),
		clock:   &clock{now: t0},
		logs:    logs,
	}
	opts := issuer.Options{
		Store:      st,
		Secrets:    func() *auth.Secrets { return f.secrets },
		URIs:       func() []string { return testURIs },
		Log:        zap.New(core),
		Registerer: f.reg,
		Now:        f.clock.Now,
	}
	for _, edit := range edits {
		edit(&opts)
	}
	f.svc, err = issuer.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.acct, _, err = f.svc.EnsurePrimaryAccount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.svc.Handler())
	t.Cleanup(func() {
		f.srv.Close()
		st.Close()
	})
	return f
}

// request is one HTTP exchange with the fixture's server.
type request struct {
	method, path string
	user, pass   string // Basic auth when user != ""
	form         string // form-encoded body
	body         io.Reader
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (f *fixture) do(t testing.TB, q request) response {
	t.Helper()
	body := q.body
	if body == nil && q.form != "" {
		body = strings.NewReader(q.form)
	}
	req, err := http.NewRequest(q.method, f.srv.URL+q.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if q.user != "" {
		req.SetBasicAuth(q.user, q.pass)
	}
	res, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", q.method, q.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func tokensPath(sid string) string { return "/2010-04-01/Accounts/" + sid + "/Tokens.json" }
func keysPath(sid string) string   { return "/2010-04-01/Accounts/" + sid + "/Keys.json" }

// normalisers replace what changes from run to run; dates are fixed by the clock.
var normalisers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`(AC[0-9a-f]{32}):[0-9a-f]{16}`), "$1:RANDOM"},
	{regexp.MustCompile(`"(password|credential)":"[^"]*"`), `"$1":"PASSWORD"`},
	{regexp.MustCompile(`"secret":"[A-Za-z0-9]{32}"`), `"secret":"SECRET"`},
	{regexp.MustCompile(`"auth_token":"[0-9a-f]{32}"`), `"auth_token":"AUTHTOKEN"`},
}

// normalise also replaces each distinct SID by a stable placeholder in order
// of appearance.
func normalise(s string) string {
	for _, n := range normalisers {
		s = n.re.ReplaceAllString(s, n.with)
	}
	for _, prefix := range []string{"AC", "SK"} {
		seen := map[string]string{}
		s = regexp.MustCompile(prefix+`[0-9a-f]{32}`).ReplaceAllStringFunc(s, func(sid string) string {
			if r, ok := seen[sid]; ok {
				return r
			}
			seen[sid] = fmt.Sprintf("%s%032d", prefix, len(seen)+1)
			return seen[sid]
		})
	}
	return s
}

// golden compares an answer with testdata/<name>.golden (status, content
// type and body, normalised), rewriting it with -update.
func golden(t testing.TB, name string, r response) {
	t.Helper()
	got := fmt.Sprintf("HTTP %d\nContent-Type: %s\n\n%s", r.status, r.header.Get("Content-Type"), r.body)
	got = normalise(got)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./issuer/ -update)", err)
	}
	if !bytes.Equal([]byte(got), want) {
		t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}

// counter reads a counter of the fixture's registry; labels as name=value pairs.
func (f *fixture) counter(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matchLabels(m, labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

func matchLabels(m *dto.Metric, labels []string) bool {
	want := map[string]string{}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		want[k] = v
	}
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// rewriteTransport sends every request to target, whatever host the client
// built the URL for (twilio-go hardcodes https://api.twilio.com).
type rewriteTransport struct {
	target *url.URL
	base   http.RoundTripper
}

func (rt rewriteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Scheme = rt.target.Scheme
	req.URL.Host = rt.target.Host
	req.Host = rt.target.Host
	return rt.base.RoundTrip(req)
}
