package auth

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var policy = Policy{MaxTTL: 24 * time.Hour, ClockSkew: 30 * time.Second}

// TestPasswordVector checks the format against the TURN REST draft's
// construction: base64(HMAC-SHA1(secret, username)), computed independently
// with `printf %s 1700003600:alice | openssl dgst -sha1 -hmac s3cret -binary | base64`.
func TestPasswordVector(t *testing.T) {
	if got, want := Password([]byte("s3cret"), "1700003600:alice"), "YAFdW/YDZewZsR1QSgUk2IrfbRI="; got != want {
		t.Fatalf("Password = %q, want %q", got, want)
	}
}

func TestMintVerify(t *testing.T) {
	now := time.Unix(1700000000, 0)
	r := NewSecrets([]string{"new-secret-0123456789", "old-secret-0123456789"})
	c, err := r.Mint("alice", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if c.Username != "1700003600:alice" || !c.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("minted %+v", c)
	}
	if user, err := r.Verify(c.Username, c.Password, now, policy); err != nil || user != "alice" {
		t.Fatalf("Verify = %q, %v", user, err)
	}
	// A credential from the old secret still verifies; one from a removed secret does not.
	old, _ := Mint([]byte("old-secret-0123456789"), "bob", time.Hour, now)
	if _, err := r.Verify(old.Username, old.Password, now, policy); err != nil {
		t.Fatalf("old secret: %v", err)
	}
	gone, _ := Mint([]byte("gone-secret-0123456789"), "bob", time.Hour, now)
	if _, err := r.Verify(gone.Username, gone.Password, now, policy); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("removed secret: %v", err)
	}
}

func TestVerifyRefusals(t *testing.T) {
	now := time.Unix(1700000000, 0)
	r := NewSecrets([]string{"secret-0123456789abc"})
	cred := func(exp int64, user string) (string, string) {
		u := strconv.FormatInt(exp, 10) + ":" + user
		return u, Password([]byte("secret-0123456789abc"), u)
	}
	cases := []struct {
		name string
		user string
		pass string
		want error
	}{
		{"wrong password", "1700003600:alice", "AAAA", ErrBadPassword},
		{"empty", "", "x", ErrMalformed},
		{"no digits", "abc:alice", "x", ErrMalformed},
		{"negative", "-5:alice", "x", ErrMalformed},
		{"too long", strings.Repeat("1", 600), "x", ErrMalformed},
		{"huge expiry", "99999999999999999999:x", "x", ErrMalformed},
	}
	u, p := cred(now.Unix()-31, "late")
	cases = append(cases, struct {
		name, user, pass string
		want             error
	}{"expired past skew", u, p, ErrExpired})
	u, p = cred(now.Add(24*time.Hour+time.Minute).Unix(), "far")
	cases = append(cases, struct {
		name, user, pass string
		want             error
	}{"beyond max ttl", u, p, ErrTooFarFuture})
	for _, c := range cases {
		if _, err := r.Verify(c.user, c.pass, now, policy); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	// Inside the skew an expired credential still passes.
	u, p = cred(now.Unix()-10, "skewed")
	if _, err := r.Verify(u, p, now, policy); err != nil {
		t.Errorf("within skew: %v", err)
	}
}

func TestParseUsernameKeepsColonsInUser(t *testing.T) {
	exp, user, err := ParseUsername("1700000000:AC0123:abcd")
	if err != nil || user != "AC0123:abcd" || exp.Unix() != 1700000000 {
		t.Fatalf("got %v %q %v", exp, user, err)
	}
}

func TestMintRefuses(t *testing.T) {
	if _, err := Mint(nil, "a", time.Hour, time.Now()); !errors.Is(err, ErrNoSecret) {
		t.Errorf("no secret: %v", err)
	}
	if _, err := Mint([]byte("k"), "a", 0, time.Now()); err == nil {
		t.Error("zero ttl accepted")
	}
	if _, err := NewSecrets(nil).Mint("a", time.Hour, time.Now()); !errors.Is(err, ErrNoSecret) {
		t.Errorf("empty ring: %v", err)
	}
}

// FuzzParseUsername: the credential parser never panics, and whatever it
// accepts has a positive expiry.
func FuzzParseUsername(f *testing.F) {
	for _, s := range []string{"1700000000:alice", "1:", ":", "", "9999999999999:x", "12:a:b:c", "\x00:\xff"} {
		f.Add(s)
	}
	r := NewSecrets([]string{"fuzz-secret-0123456789"})
	f.Fuzz(func(t *testing.T, s string) {
		exp, _, err := ParseUsername(s)
		if err == nil && exp.Unix() <= 0 {
			t.Fatalf("accepted %q with expiry %v", s, exp)
		}
		_, _ = r.Verify(s, s, time.Unix(1700000000, 0), policy)
	})
}

func BenchmarkVerify(b *testing.B) {
	now := time.Unix(1700000000, 0)
	r := NewSecrets([]string{"secret-0123456789abc"})
	c, _ := r.Mint("alice", time.Hour, now)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Verify(c.Username, c.Password, now, policy); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSecretsPooledPasswords: the ring's pooled HMACs give exactly what
// Password gives, however the requests interleave across goroutines.
func TestSecretsPooledPasswords(t *testing.T) {
	secrets := []string{"first-secret", "second", "a third, longer than the SHA-1 block size of sixty-four bytes...."}
	r := NewSecrets(secrets)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				user := fmt.Sprintf("1700000000:user%d-%d", g, i)
				got := r.Passwords(user)
				for k, s := range secrets {
					if want := Password([]byte(s), user); got[k] != want {
						t.Errorf("secret %d, %s: %s, want %s", k, user, got[k], want)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestAccountOf(t *testing.T) {
	const ac = "AC0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		user, want string
		ok         bool
	}{
		{ac + ":5f2c0a1b2c3d4e5f", ac, true},
		{ac + ":alice:5f2c0a1b2c3d4e5f", ac, true},
		{ac, ac, true},
		{"alice", "", false},
		{"", "", false},
		{"AC0123:x", "", false},
		{"SK0123456789abcdef0123456789abcdef:x", "", false},
		{"AC0123456789abcdef0123456789abcde!:x", "", false},
	} {
		got, ok := AccountOf(tc.user)
		if got != tc.want || ok != tc.ok {
			t.Errorf("AccountOf(%q) = %q, %v; want %q, %v", tc.user, got, ok, tc.want, tc.ok)
		}
	}
}

func TestKeyTag(t *testing.T) {
	const acct = "AC0123456789abcdef0123456789abcdef"
	tag := KeyTag("SK0123456789abcdef0123456789abcdef")
	if len(tag) != KeyTagLen || tag == KeyTag("SK0123456789abcdef0123456789abcdee") {
		t.Fatalf("KeyTag = %q", tag)
	}
	for _, tc := range []struct {
		user, tag string
		ok        bool
	}{
		{acct + ":alice:" + tag + "0011aabb", tag, true},
		{acct + ":0011aabbccddeeff", "", false}, // Tokens resource: no key
		{"static", "", false},
		{acct + ":alice:short", "", false},
		{"XX0123456789abcdef0123456789abcdef:alice:" + tag + "00", "", false},
	} {
		got, ok := KeyTagOf(tc.user)
		if got != tc.tag || ok != tc.ok {
			t.Errorf("KeyTagOf(%q) = %q, %v; want %q, %v", tc.user, got, ok, tc.tag, tc.ok)
		}
	}
}
