package relay

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPerAccountQuota: with relay.quota.per_account 3, an account's fourth
// concurrent allocation gets 486 however many credentials it minted (each
// Tokens-resource credential is a user of its own), while another account
// is unaffected; when one of its allocations ends the account allocates
// again.
func TestPerAccountQuota(t *testing.T) {
	cfg := testConfig()
	cfg.Relay.Quota.PerUser = 2
	cfg.Relay.Quota.PerAccount = 3
	r := startRelay(t, cfg, false)
	server := r.Addrs().UDP[0]
	acct := "AC" + strings.Repeat("a", 32)
	other := "AC" + strings.Repeat("b", 32)
	tokenUser := func(account string, i int) string { return account + ":" + strconv.Itoa(1000000+i) }

	var held []func()
	for i := 0; i < 3; i++ {
		cred := mint(t, testSecret, tokenUser(acct, i), time.Hour)
		c := newClient(t, "udp", server, cred.Username, cred.Password)
		rc, err := c.Allocate()
		if err != nil {
			t.Fatalf("allocation %d: %v", i+1, err)
		}
		held = append(held, func() { _ = rc.Close() })
		t.Cleanup(func() { _ = rc.Close() })
	}
	cred := mint(t, testSecret, tokenUser(acct, 3), time.Hour)
	if _, err := newClient(t, "udp", server, cred.Username, cred.Password).Allocate(); !isErrCode(err, "486") {
		t.Fatalf("fourth allocation of the account: err = %v, want 486", err)
	}
	if got := r.metric(t, "traverse_relay_quota_rejections_total", "per_account"); got != 1 {
		t.Errorf("per_account rejections = %v, want 1", got)
	}
	// Another account is not affected.
	oc := mint(t, testSecret, tokenUser(other, 0), time.Hour)
	rc, err := newClient(t, "udp", server, oc.Username, oc.Password).Allocate()
	if err != nil {
		t.Fatalf("another account: %v", err)
	}
	_ = rc.Close()
	// A static-style user without an account counts only per user.
	nc := mint(t, testSecret, "alice", time.Hour)
	rc, err = newClient(t, "udp", server, nc.Username, nc.Password).Allocate()
	if err != nil {
		t.Fatalf("a user without an account: %v", err)
	}
	_ = rc.Close()
	// One allocation ends: the account allocates again.
	held[0]()
	waitFor(t, "the freed allocation to be counted out", 10*time.Second, func() bool {
		return r.allocs.countAccount(acct) == 2
	})
	cred = mint(t, testSecret, tokenUser(acct, 4), time.Hour)
	rc, err = newClient(t, "udp", server, cred.Username, cred.Password).Allocate()
	if err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	_ = rc.Close()
}
