package e2e

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/traverse/traverse/internal/pgtest"
)

// TestPostgresTwoNodes runs two `traverse serve` processes on one PostgreSQL
// database (a throwaway cluster), with the same encryption key and TURN
// secrets: an API key made through node B's Keys resource signs in at node
// A's Tokens resource, A's credential allocates on B's relay, and once
// `traverse keys delete` runs with node B's config, node A refuses the key on
// the very next request (401, Twilio code 20003).
func TestPostgresTwoNodes(t *testing.T) {
	cluster := pgtest.Start(t)
	dsn := cluster.NewDatabase(t)
	extra := fmt.Sprintf("store:\n  dsn: %q\n  encryption_key: %s\n",
		dsn, hex.EncodeToString(bytes.Repeat([]byte{0x5a}, 32)))
	a := Start(t, Options{Extra: extra})
	b := Start(t, Options{Extra: extra})

	// Node B serves node A's account, created by A's CLI: the store is shared.
	key := createKeyAt(t, b.Issuer, a.AccountSid, a.AuthToken)

	status, body := postTokens(t, a.Issuer, a.AccountSid, key.Sid, key.Secret)
	if status != http.StatusCreated {
		t.Fatalf("node A, Tokens with node B's key: %d %s", status, body)
	}
	var tok Token
	if err := json.Unmarshal(body, &tok); err != nil || tok.Username == "" || tok.AccountSid != a.AccountSid {
		t.Fatalf("node A, Tokens: %s (%v)", body, err)
	}
	// The same auth.secrets on both: node A's credential allocates on node B.
	peer := FreeUDPPeer(t)
	_, rc, err := turnClient(t, "udp", b.UDP, tok.Username, tok.Password)
	if err != nil {
		t.Fatalf("allocate on node B with node A's credential: %v", err)
	}
	if _, err := rc.WriteTo([]byte("across nodes"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_ = rc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, _, err := rc.ReadFrom(buf); err != nil || string(buf[:n]) != "across nodes" {
		t.Fatalf("echo through node B: %q %v", buf[:n], err)
	}

	b.CLI("keys", "delete", key.Sid)
	status, body = postTokens(t, a.Issuer, a.AccountSid, key.Sid, key.Secret)
	var e struct {
		Code   int `json:"code"`
		Status int `json:"status"`
	}
	if status != http.StatusUnauthorized || json.Unmarshal(body, &e) != nil || e.Code != 20003 || e.Status != 401 {
		t.Fatalf("node A, right after node B's CLI deleted the key: %d %s, want 401 with code 20003", status, body)
	}
	// The account's own auth token still works on node A.
	if status, body := postTokens(t, a.Issuer, a.AccountSid, a.AccountSid, a.AuthToken); status != http.StatusCreated {
		t.Fatalf("node A, Tokens with the auth token: %d %s", status, body)
	}
	if logs := a.Logs() + b.Logs(); strings.Contains(logs, cluster.Password) {
		t.Error("a node logged the database password")
	}
}

// createKeyAt creates an API key of account through the Keys resource at issuer.
func createKeyAt(t *testing.T, issuer, account, authToken string) apiKey {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, issuer+"/2010-04-01/Accounts/"+account+"/Keys.json",
		strings.NewReader(url.Values{"FriendlyName": {"e2e postgres"}}.Encode()))
	req.SetBasicAuth(account, authToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var k apiKey
	if res.StatusCode != http.StatusCreated || json.Unmarshal(body, &k) != nil || k.Secret == "" {
		t.Fatalf("Keys at %s: %d %s", issuer, res.StatusCode, body)
	}
	return k
}

// postTokens POSTs to the Tokens resource of account at issuer, authenticated
// as user:password (an account SID and auth token, or a key SID and secret).
func postTokens(t *testing.T, issuer, account, user, password string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, issuer+"/2010-04-01/Accounts/"+account+"/Tokens.json", nil)
	req.SetBasicAuth(user, password)
	res, err := HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, body
}
