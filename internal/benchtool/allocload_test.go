package main

import (
	"testing"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
)

// The hand-built signed Allocate must be what pion's STUN code (the relay's)
// accepts: the same MESSAGE-INTEGRITY under the long-term key, a valid
// FINGERPRINT, and the attributes where pion looks for them.
func TestSignedAllocateVerifiesWithPion(t *testing.T) {
	const user, realm, pass = "1700000000:alloc7", "traverse", "c2VjcmV0LXBhc3N3b3Jk"
	key := turn.GenerateAuthKey(user, realm, pass)
	tid := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	mac := newHMACSHA1()
	mac.setKey(key)
	m := stunMsg{b: make([]byte, 0, allocMaxMessageSize)}
	m.start(typeAllocate, &tid)
	m.attr(attrRequestedTrans, requestedUDP)
	m.attrString(attrUsername, user)
	m.attrString(attrRealm, realm)
	m.attr(attrNonce, []byte("nonce-of-odd-length"))
	m.integrity(mac)
	m.fingerprint()

	msg := &stun.Message{Raw: append([]byte(nil), m.b...)}
	if err := msg.Decode(); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if msg.Type != stun.NewType(stun.MethodAllocate, stun.ClassRequest) || msg.TransactionID != tid {
		t.Fatalf("type %v, transaction ID %x", msg.Type, msg.TransactionID)
	}
	if err := stun.MessageIntegrity(key).Check(msg); err != nil {
		t.Fatalf("MESSAGE-INTEGRITY: %v", err)
	}
	if err := stun.Fingerprint.Check(msg); err != nil {
		t.Fatalf("FINGERPRINT: %v", err)
	}
	var u stun.Username
	var n stun.Nonce
	if u.GetFrom(msg) != nil || u.String() != user || n.GetFrom(msg) != nil || n.String() != "nonce-of-odd-length" {
		t.Fatalf("username %q nonce %q", u, n)
	}
	// A second message with another key reuses the buffers.
	mac.setKey([]byte("another key"))
	m.start(typeRefresh, &tid)
	m.attr(attrLifetime, lifetimeZero)
	m.integrity(mac)
	m.fingerprint()
	msg = &stun.Message{Raw: append([]byte(nil), m.b...)}
	if err := msg.Decode(); err != nil {
		t.Fatal(err)
	}
	if err := stun.MessageIntegrity([]byte("another key")).Check(msg); err != nil {
		t.Fatalf("MESSAGE-INTEGRITY after setKey: %v", err)
	}
}

func TestParseReply(t *testing.T) {
	tid := stun.NewTransactionID()
	res := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized, Reason: []byte("Unauthorized")},
		stun.NewRealm("traverse"), stun.NewNonce("abc"), stun.Fingerprint)
	want := [12]byte(tid)
	r, ok := parseReply(res.Raw, &want)
	if !ok || r.typ != typeAllocateErr || r.code != 401 || string(r.realm) != "traverse" || string(r.nonce) != "abc" {
		t.Fatalf("parsed %+v ok=%v", r, ok)
	}
	other := [12]byte{}
	if _, ok := parseReply(res.Raw, &other); ok {
		t.Fatal("accepted another transaction's answer")
	}
	ok200 := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse),
		&stun.XORMappedAddress{IP: []byte{127, 0, 0, 1}, Port: 40000})
	// XOR-MAPPED-ADDRESS is not XOR-RELAYED-ADDRESS.
	if r, ok := parseReply(ok200.Raw, &want); !ok || r.relayed {
		t.Fatalf("parsed %+v ok=%v", r, ok)
	}
}

// Whatever comes back on a socket, parseReply neither panics nor reads past
// the datagram.
func FuzzParseReply(f *testing.F) {
	tid := [12]byte{9, 9, 9}
	res := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeStaleNonce}, stun.NewNonce("n"), stun.NewRealm("r"))
	f.Add(res.Raw)
	f.Add(res.Raw[:len(res.Raw)-3])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) >= 20 {
			copy(b[8:20], tid[:])
		}
		r, _ := parseReply(b, &tid)
		_ = r
	})
}
