package issuer

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// encodeResource is what writeJSON sends for a token.
func encodeResource(t *testing.T, tok Token) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(tok.Resource()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestTokenJSONMatchesEncoder: the hand-written Tokens answer is byte for
// byte what encoding/json makes of TokenResource, also for strings that
// need escaping (configured URIs are free text) and for odd values.
func TestTokenJSONMatchesEncoder(t *testing.T) {
	now := time.Date(2020, 5, 1, 1, 42, 57, 0, time.UTC)
	odd := []string{
		"", "plain", `quote"d`, `back\slash`, "tab\there", "nl\nx", "cr\rx", "\b\f\x00\x1f\x7f",
		"<html>&amp;", "ünïcødé", "\u2028\u2029", "bad\xffutf8", "turn:[2001:db8::1]:3478?transport=udp",
	}
	var toks []Token
	for _, s := range odd {
		toks = append(toks, Token{
			AccountSid: "AC" + s, DateCreated: now, DateUpdated: now.Add(time.Hour),
			ICEServers: ICEServers([]string{"stun:" + s, "turn:" + s + "?transport=udp", "turns:x"}, "u"+s, s),
			Username:   "1588297377:" + s, Password: s, TTL: 3600 * time.Second,
		})
	}
	toks = append(toks,
		Token{}, // zero time, nil ICE servers
		Token{ICEServers: []ICEServer{}, DateCreated: time.Date(12345, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 3600)), TTL: 1500 * time.Millisecond},
		Token{AccountSid: "ACx", DateCreated: now.In(time.FixedZone("y", -7200)), ICEServers: ICEServers(testURIsInternal, "user", "pass"), TTL: 24 * time.Hour},
	)
	for i, tok := range toks {
		want := encodeResource(t, tok)
		if got := appendTokenJSON(nil, tok); !bytes.Equal(got, want) {
			t.Errorf("token %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

var testURIsInternal = DefaultURIs("203.0.113.7", 3478, 3478, 443)

// TestPlainFormValue: the Ttl read without ParseForm gives what ParseForm
// gives, and hands every other body to it intact.
func TestPlainFormValue(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	cases := []struct {
		method, target, ctype, body string
		plain                       bool // read by plainFormValue
	}{
		{"POST", "/", form, "Ttl=3600", true},
		{"POST", "/", form, "", true},
		{"POST", "/", form, "Ttl", true},
		{"POST", "/", form, "a=1&Ttl=60&Ttl=70", true},
		{"POST", "/", form, "&&Ttl=1=2&", true},
		{"POST", "/", form, "ttl=5", true},
		{"POST", "/", form, "Ttl=3600&x=" + strings.Repeat("y", 600), false},
		{"POST", "/", form, "Ttl=%33600", false},
		{"POST", "/", form, "Ttl=36+00", false},
		{"POST", "/", form, "Ttl=3600;x=1", false},
		{"POST", "/", form, "Ttl=%zz", false},
		{"POST", "/?Ttl=5", form, "Ttl=3600", false},
		{"POST", "/?Ttl=5", form, "", false},
		{"POST", "/", "application/x-www-form-urlencoded; charset=utf-8", "Ttl=3600", false},
		{"POST", "/", "text/plain", "Ttl=3600", false},
		{"POST", "/", "", "Ttl=3600", false},
		{"PUT", "/", form, "Ttl=3600", false},
	}
	for _, c := range cases {
		newReq := func() *http.Request {
			r := httptest.NewRequest(c.method, c.target, strings.NewReader(c.body))
			if c.ctype != "" {
				r.Header.Set("Content-Type", c.ctype)
			}
			return r
		}
		ref := newReq()
		refErr := ref.ParseForm()
		want := ref.Form.Get("Ttl")

		r := newReq()
		v, ok, err := plainFormValue(r, "Ttl")
		if err != nil || ok != c.plain {
			t.Errorf("%s %s %q %q: ok %v err %v, want ok %v", c.method, c.target, c.ctype, c.body, ok, err, c.plain)
			continue
		}
		if !ok {
			// The fallback sees the whole body.
			err := r.ParseForm()
			if (err == nil) != (refErr == nil) {
				t.Errorf("%q: ParseForm after fallback: %v, want %v", c.body, err, refErr)
			}
			v = r.Form.Get("Ttl")
		}
		if v != want {
			t.Errorf("%s %s %q: Ttl %q, want %q", c.method, c.target, c.body, v, want)
		}
	}
}

// TestPlainFormValueErrors: a body over the limit is still 413.
func TestPlainFormValueErrors(t *testing.T) {
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/", strings.NewReader("Ttl=1"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Body = http.MaxBytesReader(w, r.Body, 3)
	if _, _, err := plainFormValue(r, "Ttl"); err != errBodyTooLarge {
		t.Fatalf("over the limit: %v, want errBodyTooLarge", err)
	}
}
