package relay

import (
	"net"
	"testing"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/internal/turntest"
)

// TestRefusedThenRightPasswordRaw: a raw STUN exchange. The 401 that answers
// a wrong password carries a nonce the next request may use: the right
// password, sent with it, allocates at once, with no 438 Stale Nonce between.
func TestRefusedThenRightPasswordRaw(t *testing.T) {
	cfg := testConfig()
	cfg.Auth.Users = []config.User{{Name: "softphone", Password: "static-password-1"}}
	r := startRelay(t, cfg, false)
	overUDPAndTCP(t, r, func(t *testing.T, transport string, server net.Addr) {
		c := &turntest.Client{Conn: dialClientConn(t, transport, server), Server: server}
		defer c.Conn.Close()
		allocate := func(setters ...stun.Setter) *stun.Message {
			t.Helper()
			all := append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
				turntest.RequestedUDP}, setters...)
			m, err := stun.Build(append(all, stun.Fingerprint)...)
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.Exchange(m)
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			return res
		}
		signed := func(nonce stun.Nonce, password string) []stun.Setter {
			return []stun.Setter{stun.NewUsername("softphone"), stun.NewRealm("traverse"), nonce,
				stun.NewLongTermIntegrity("softphone", "traverse", password)}
		}
		codeNonce := func(m *stun.Message) (stun.ErrorCode, stun.Nonce) {
			var code stun.ErrorCodeAttribute
			var nonce stun.Nonce
			_ = code.GetFrom(m)
			_ = nonce.GetFrom(m)
			return code.Code, nonce
		}

		code, n1 := codeNonce(allocate())
		if code != stun.CodeUnauthorized || len(n1) == 0 {
			t.Fatalf("unauthenticated allocate: code %d nonce %q, want 401 with a nonce", code, n1)
		}
		code, n2 := codeNonce(allocate(signed(n1, "wrong-guess")...))
		if code != stun.CodeUnauthorized || len(n2) == 0 {
			t.Fatalf("wrong password: code %d nonce %q, want 401 with a nonce", code, n2)
		}
		res := allocate(signed(n2, "static-password-1")...)
		if res.Type.Class != stun.ClassSuccessResponse {
			code, _ := codeNonce(res)
			t.Fatalf("right password with the 401's nonce: %s code %d, want success (no 438)", res.Type, code)
		}
	})
}

// TestRefusedThenRightPasswordPion: pion's client with a wrong password is
// refused with 401; pion's client with the right one, from the same IP
// right after, allocates. (pion's v4 client starts every Allocate without
// credentials and reads one socket per client, so it gets a socket of its own.)
func TestRefusedThenRightPasswordPion(t *testing.T) {
	cfg := testConfig()
	cfg.Auth.Users = []config.User{{Name: "softphone", Password: "static-password-1"}}
	r := startRelay(t, cfg, false)
	overUDPAndTCP(t, r, func(t *testing.T, transport string, server net.Addr) {
		conn := dialClientConn(t, transport, server)
		defer conn.Close()
		bad, err := makeClient(conn, server, "softphone", "wrong-guess")
		if err != nil {
			t.Fatal(err)
		}
		_, err = bad.Allocate()
		bad.Close()
		if !isErrCode(err, "401") {
			t.Fatalf("wrong password: err = %v, want 401", err)
		}
		good := newClient(t, transport, server, "softphone", "static-password-1")
		relayed, err := good.Allocate()
		if err != nil {
			t.Fatalf("right password after a wrong one: %v", err)
		}
		_ = relayed.Close()
	})
}

// overUDPAndTCP runs f as a subtest for r's UDP and TCP listeners.
func overUDPAndTCP(t *testing.T, r *testRelay, f func(t *testing.T, transport string, server net.Addr)) {
	for _, transport := range []string{"udp", "tcp"} {
		server := r.Addrs().UDP[0]
		if transport == "tcp" {
			server = r.Addrs().TCP[0]
		}
		t.Run(transport, func(t *testing.T) { f(t, transport, server) })
	}
}
