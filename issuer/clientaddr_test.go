package issuer_test

import (
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"

	"github.com/traverse/traverse/issuer"
)

// forwarded is a Tokens request that claims, in X-Forwarded-For, to come from client.
func forwarded(f *fixture, pass, client string) *http.Request {
	req, _ := http.NewRequest("POST", f.srv.URL+tokensPath(f.acct.Sid), nil)
	req.SetBasicAuth(f.acct.Sid, pass)
	req.Header.Set("X-Forwarded-For", client)
	return req
}

func send(t *testing.T, req *http.Request) int {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestSpoofedForwardedForIgnored: from a peer that is not a trusted proxy,
// X-Forwarded-For changes nothing: a client cannot escape its failure budget
// by naming a new address on each request.
func TestSpoofedForwardedForIgnored(t *testing.T) {
	f := newNode(t, t.TempDir(), func(o *issuer.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} // not loopback
	})
	for i := 0; i < 20; i++ {
		if st := send(t, forwarded(f, "wrong-token-wrong-token-wrong-000", "198.51.100."+strconv.Itoa(i))); st != 401 {
			t.Fatalf("failure %d: %d", i, st)
		}
	}
	if st := send(t, forwarded(f, f.acct.AuthToken, "198.51.100.200")); st != 429 {
		t.Fatalf("good credentials from the same peer after 20 failures: %d, want 429", st)
	}
}

// TestTrustedProxyChain: behind a trusted proxy (the loopback peer), each
// client named by X-Forwarded-For has its own failure budget, the relay
// choice sees that client, and entries the client wrote itself (left of
// the right-most untrusted one) are ignored.
func TestTrustedProxyChain(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []netip.Addr
	)
	f := newNode(t, t.TempDir(), func(o *issuer.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
		o.RelayURIs = func(client netip.Addr) []string {
			mu.Lock()
			seen = append(seen, client)
			mu.Unlock()
			return testURIs
		}
	})
	// The client wrote "203.0.113.66" itself; the outer proxy 10.0.0.2 added
	// the address it saw, 198.51.100.1.
	for i := 0; i < 20; i++ {
		if st := send(t, forwarded(f, "wrong-token-wrong-token-wrong-000", "203.0.113."+strconv.Itoa(i)+", 198.51.100.1, 10.0.0.2")); st != 401 {
			t.Fatalf("failure %d: %d", i, st)
		}
	}
	if st := send(t, forwarded(f, f.acct.AuthToken, "198.51.100.1, 10.0.0.2")); st != 429 {
		t.Fatalf("client 198.51.100.1 after its 20 failures: %d, want 429", st)
	}
	if st := send(t, forwarded(f, f.acct.AuthToken, "198.51.100.2, 10.0.0.2")); st != 201 {
		t.Fatalf("another client behind the same proxy: %d, want 201", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != netip.MustParseAddr("198.51.100.2") {
		t.Fatalf("relay choice saw clients %v, want [198.51.100.2]", seen)
	}
}
