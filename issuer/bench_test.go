package issuer_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
		req := httptest.NewRequest("POST", path, strings.NewReader("Ttl=3600"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(a.Sid, a.AuthToken)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusCreated {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
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
