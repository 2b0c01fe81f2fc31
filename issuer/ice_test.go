package issuer_test

import (
	"reflect"
	"testing"

	"github.com/traverse/traverse/issuer"
)

func TestDefaultURIs(t *testing.T) {
	for _, c := range []struct {
		host          string
		udp, tcp, tls int
		want          []string
	}{
		{"turn.example.com", 3478, 3478, 443, []string{
			"stun:turn.example.com:3478",
			"turn:turn.example.com:3478?transport=udp",
			"turn:turn.example.com:3478?transport=tcp",
			"turn:turn.example.com:443?transport=tcp",
			"turns:turn.example.com:443?transport=tcp",
		}},
		{"203.0.113.7", 3478, 3478, 0, []string{
			"stun:203.0.113.7:3478",
			"turn:203.0.113.7:3478?transport=udp",
			"turn:203.0.113.7:3478?transport=tcp",
		}},
		{"2001:db8::1", 3478, 0, 5349, []string{
			"stun:[2001:db8::1]:3478",
			"turn:[2001:db8::1]:3478?transport=udp",
			"turn:[2001:db8::1]:5349?transport=tcp",
			"turns:[2001:db8::1]:5349?transport=tcp",
		}},
		{"[2001:db8::1]", 0, 3478, 0, []string{"turn:[2001:db8::1]:3478?transport=tcp"}},
		{"h", 0, 443, 443, []string{"turn:h:443?transport=tcp", "turns:h:443?transport=tcp"}},
		{"h", 0, 0, 0, nil},
	} {
		if got := issuer.DefaultURIs(c.host, c.udp, c.tcp, c.tls); !reflect.DeepEqual(got, c.want) {
			t.Errorf("DefaultURIs(%q, %d, %d, %d) = %q, want %q", c.host, c.udp, c.tcp, c.tls, got, c.want)
		}
	}
}

func TestICEServers(t *testing.T) {
	got := issuer.ICEServers([]string{"stun:h:3478", "turn:h:3478?transport=udp", "turns:h:443?transport=tcp"}, "u", "p")
	want := []issuer.ICEServer{
		{URL: "stun:h:3478", URLs: "stun:h:3478"},
		{URL: "turn:h:3478?transport=udp", URLs: "turn:h:3478?transport=udp", Username: "u", Credential: "p"},
		{URL: "turns:h:443?transport=tcp", URLs: "turns:h:443?transport=tcp", Username: "u", Credential: "p"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
}

func TestParseTTL(t *testing.T) {
	for in, want := range map[string]int64{"": 86400, "1": 1, "86400": 86400, "0600": 600} {
		got, err := issuer.ParseTTL(in)
		if err != nil || int64(got.Seconds()) != want {
			t.Errorf("ParseTTL(%q) = %s, %v", in, got, err)
		}
	}
	for _, in := range []string{"0", "-1", "86401", "abc", "1e3", " 60", "60s", "+60"} {
		if _, err := issuer.ParseTTL(in); err == nil {
			t.Errorf("ParseTTL(%q) accepted", in)
		}
	}
}
