package issuer_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/traverse/traverse/store"
)

// BenchmarkCreateToken measures one Tokens request through the handler
// (routing, Basic auth against SQLite, form parsing, minting, JSON), without
// the network.
func BenchmarkCreateToken(b *testing.B) {
	f := newFixture(b)
	h := f.svc.Handler()
	a := f.acct
	path := tokensPath(a.Sid)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mintToken(b, h, path, a.Sid, a.AuthToken)
	}
}

// mintToken posts one Tokens request and fails b unless it is created.
func mintToken(b *testing.B, h http.Handler, path, user, pass string) {
	req := httptest.NewRequest("POST", path, strings.NewReader("Ttl=3600"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(user, pass)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusCreated {
		b.Fatalf("status %d: %s", w.Code, w.Body)
	}
}

// BenchmarkCreateTokenWithKey is the same with an API key (two lookups).
func BenchmarkCreateTokenWithKey(b *testing.B) {
	f := newFixture(b)
	h := f.svc.Handler()
	k, err := f.svc.CreateKey(b.Context(), f.acct.Sid, "bench")
	if err != nil {
		b.Fatal(err)
	}
	path := tokensPath(f.acct.Sid)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest("POST", path, strings.NewReader("Ttl=3600"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(k.Sid, k.Secret)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusCreated {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

// BenchmarkCreateTokenManyAccounts is BenchmarkCreateToken with each request
// from the next of 10,000 accounts, as scripts/bench's issuer run makes
// them: the store's lookups must stay cached across that many (a cache
// emptied at 4,096 rows never hit, and every request read its row).
func BenchmarkCreateTokenManyAccounts(b *testing.B) {
	const n = 10000
	f := newFixture(b)
	h := f.svc.Handler()
	type cred struct{ path, user, pass string }
	creds := make([]cred, n)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				a := store.Account{Sid: fmt.Sprintf("AC%032x", i), FriendlyName: "bench",
					AuthToken: fmt.Sprintf("%032x", n+i), Status: store.StatusActive, DateCreated: t0, DateUpdated: t0}
				if err := f.store.CreateAccount(b.Context(), a); err != nil {
					errs <- err
					return
				}
				creds[i] = cred{tokensPath(a.Sid), a.Sid, a.AuthToken}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	mint := func(c cred) { mintToken(b, h, c.path, c.user, c.pass) }
	for _, c := range creds { // one pass to fill the caches
		mint(c)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mint(creds[i%n])
	}
}
