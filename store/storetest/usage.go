package storetest

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/traverse/traverse/store"
)

// testUsage: deltas written for the same bucket (as two nodes write them)
// add up; ListUsage bounds hours and accounts.
func testUsage(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, b := Account(1, "").Sid, Account(2, "").Sid
	h := t0.Truncate(time.Hour)
	row := func(acct, region string, hour time.Time, n int64) store.UsageRow {
		return store.UsageRow{AccountSid: acct, Region: region, Hour: hour, BytesSent: n, BytesReceived: 2 * n, PacketsSent: 1, PacketsReceived: 2}
	}
	must(t, s.AddUsage(ctx, []store.UsageRow{row(a, "", h, 100), row(b, "", h, 7)}))
	must(t, s.AddUsage(ctx, []store.UsageRow{row(a, "", h.Add(30*time.Minute), 50), row(a, "", h.Add(time.Hour), 1), row(a, "eu", h, 3)}))
	must(t, s.AddUsage(ctx, nil))
	got, err := s.ListUsage(ctx, []string{a}, h, h.Add(time.Hour))
	must(t, err)
	want := []store.UsageRow{
		{AccountSid: a, Region: "", Hour: h, BytesSent: 150, BytesReceived: 300, PacketsSent: 2, PacketsReceived: 4},
		{AccountSid: a, Region: "eu", Hour: h, BytesSent: 3, BytesReceived: 6, PacketsSent: 1, PacketsReceived: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ListUsage = %+v, want %+v", got, want)
	}
	got, err = s.ListUsage(ctx, []string{a, b}, h.Add(-time.Hour), h.Add(2*time.Hour))
	must(t, err)
	if len(got) != 4 {
		t.Fatalf("ListUsage over both accounts and two hours = %d rows, want 4: %+v", len(got), got)
	}
	if got, err := s.ListUsage(ctx, nil, h, h.Add(time.Hour)); err != nil || len(got) != 0 {
		t.Fatalf("ListUsage with no accounts = %v, %v", got, err)
	}
}

// testRevocations: a later expiry wins, expired ones are forgotten, a
// watcher hears of an addition through the same store.
func testRevocations(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	heard := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.WatchRevocations(ctx, func() { heard <- struct{}{} })
	}()
	defer func() { cancel(); <-done }()
	wait := func() {
		t.Helper()
		select {
		case <-heard:
		case <-time.After(10 * time.Second):
			t.Fatal("watcher not called")
		}
	}
	wait() // the initial call
	must(t, s.AddRevocation(ctx, store.Revocation{Kind: store.RevokeUser, Value: "1:u", Expires: t0.Add(time.Hour)}))
	wait()
	must(t, s.AddRevocation(ctx, store.Revocation{Kind: store.RevokeUser, Value: "1:u", Expires: t0.Add(time.Minute)}))
	must(t, s.AddRevocation(ctx, store.Revocation{Kind: store.RevokeAccount, Value: "AC1", Expires: t0.Add(time.Second)}))
	must(t, s.AddRevocation(ctx, store.Revocation{Kind: store.RevokeKey, Value: "AC1:abc", Expires: t0.Add(time.Hour)}))
	got, err := s.ListRevocations(ctx, t0.Add(2*time.Second))
	must(t, err)
	want := []store.Revocation{
		{Kind: store.RevokeKey, Value: "AC1:abc", Expires: t0.Add(time.Hour)},
		{Kind: store.RevokeUser, Value: "1:u", Expires: t0.Add(time.Hour)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ListRevocations = %+v, want %+v", got, want)
	}
	must(t, s.DeleteRevocation(ctx, store.RevokeKey, "AC1:abc"))
	must(t, s.DeleteRevocation(ctx, store.RevokeKey, "nothing"))
	got, err = s.ListRevocations(ctx, t0)
	must(t, err)
	if len(got) != 1 || got[0].Kind != store.RevokeUser {
		t.Fatalf("after delete: %+v", got)
	}
}

// testLiveAllocations: a node's list replaces its previous one; stale
// nodes' lists are not returned.
func testLiveAllocations(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := Account(1, "").Sid
	la := func(id, node string) store.LiveAllocation {
		return store.LiveAllocation{ID: id, Node: node, AccountSid: a, Username: "9:" + a + ":x", Client: "127.0.0.1:1",
			Transport: "udp", Relay: "127.0.0.1:2", Created: t0, Expires: t0.Add(time.Hour), Permissions: 1, Channels: 2, BytesSent: 3, BytesReceived: 4}
	}
	must(t, s.PutLiveAllocations(ctx, "n1", []store.LiveAllocation{la("A1", "n1"), la("A2", "n1")}, t0))
	must(t, s.PutLiveAllocations(ctx, "n2", []store.LiveAllocation{la("B1", "n2")}, t0.Add(time.Minute)))
	must(t, s.PutLiveAllocations(ctx, "n1", []store.LiveAllocation{la("A2", "n1")}, t0.Add(time.Minute)))
	got, err := s.ListLiveAllocations(ctx, []string{a}, t0)
	must(t, err)
	if len(got) != 2 {
		t.Fatalf("ListLiveAllocations = %+v, want A2 and B1", got)
	}
	if !reflect.DeepEqual(got[0], la("A2", "n1")) && !reflect.DeepEqual(got[1], la("A2", "n1")) {
		t.Fatalf("A2 read back as %+v", got)
	}
	if got, _ := s.ListLiveAllocations(ctx, []string{a}, t0.Add(time.Minute)); len(got) != 0 {
		t.Fatalf("stale lists returned: %+v", got)
	}
	if got, _ := s.ListLiveAllocations(ctx, []string{"ACother"}, t0); len(got) != 0 {
		t.Fatalf("another account's returned: %+v", got)
	}
}
