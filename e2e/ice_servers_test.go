package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/traverse/traverse/auth"
)

// appOrigin is the web page's origin in the browser-style requests.
const appOrigin = "https://app.example.test"

// postICEServers POSTs to /v1/ice-servers with a bearer token from the
// app's origin, as a browser would, checks the CORS answer, and returns the
// status and body.
func postICEServers(t *testing.T, in *Instance, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.Issuer+"/v1/ice-servers", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Origin", appOrigin)
	client := HTTPClient()
	defer client.CloseIdleConnections()
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != appOrigin {
		t.Errorf("Access-Control-Allow-Origin = %q, want %q", got, appOrigin)
	}
	return res.StatusCode, body
}

// TestICEServersAllocateOnRelay: an Access Token signed with a key made by
// the CLI buys, at POST /v1/ice-servers of the running binary, a credential
// that allocates on the same process's relay and expires with the token;
// once the key is deleted the same token is refused with 20151.
func TestICEServersAllocateOnRelay(t *testing.T) {
	in := Start(t, Options{CORSOrigins: []string{appOrigin}})
	var key struct {
		Sid    string `json:"sid"`
		Secret string `json:"secret"`
	}
	if out := in.CLI("keys", "create", "--account", in.AccountSid, "--json"); json.Unmarshal(out, &key) != nil || key.Secret == "" {
		t.Fatalf("keys create printed %q", out)
	}
	now := time.Now()
	token, err := auth.AccessToken{
		AccountSid: in.AccountSid, KeySid: key.Sid, Identity: "e2e_user", TTL: 10 * time.Minute,
	}.Sign([]byte(key.Secret), now)
	if err != nil {
		t.Fatal(err)
	}
	status, body := postICEServers(t, in, token)
	if status != http.StatusCreated {
		t.Fatalf("ice-servers: %d %s", status, body)
	}
	var tok Token
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tok.Username, ":"+in.AccountSid+":e2e_user:") {
		t.Fatalf("username %q does not name the account and identity", tok.Username)
	}
	exp, _, err := auth.ParseUsername(tok.Username)
	if err != nil || exp.Unix() > now.Add(10*time.Minute).Unix() {
		t.Fatalf("credential expires %v, after the token (%v)", exp, err)
	}
	var udp ICEServer
	for _, s := range tok.ICEServers {
		if strings.HasPrefix(s.URLs, "turn:") && strings.HasSuffix(s.URLs, "transport=udp") {
			udp = s
		}
	}
	if udp.Username == "" {
		t.Fatalf("no turn: UDP entry with a credential in %+v", tok.ICEServers)
	}
	transport, server := parseTURNURI(t, udp.URLs)
	peer := FreeUDPPeer(t)
	_, rc, err := turnClient(t, transport, server, udp.Username, udp.Credential)
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	if _, err := rc.WriteTo([]byte("via ice-servers"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_ = rc.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := rc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "via ice-servers" {
		t.Fatalf("echo: %q %v", buf[:n], err)
	}

	in.CLI("keys", "delete", key.Sid)
	status, body = postICEServers(t, in, token)
	var e struct {
		Code int `json:"code"`
	}
	if status != http.StatusUnauthorized || json.Unmarshal(body, &e) != nil || e.Code != auth.CodeTokenAuth {
		t.Fatalf("after deleting the key: %d %s", status, body)
	}
	if got := in.Metric(`traverse_issuer_ice_servers_issued_total{token="access"}`); got != 1 {
		t.Errorf("ice_servers_issued{access} = %v, want 1", got)
	}
}
