// Package storetest is a conformance suite for store.Store implementations:
// each backend's tests call Run with a function that opens a fresh, empty store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/traverse/traverse/store"
)

// Run checks the behaviour every store.Store must have. open returns a new,
// empty store; Run closes it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("Accounts", func(t *testing.T) { testAccounts(t, open(t)) })
	t.Run("FirstAccount", func(t *testing.T) { testFirstAccount(t, open(t)) })
	t.Run("Keys", func(t *testing.T) { testKeys(t, open(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open(t)) })
	t.Run("Nodes", func(t *testing.T) { testNodes(t, open(t)) })
	t.Run("Usage", func(t *testing.T) { testUsage(t, open(t)) })
	t.Run("Revocations", func(t *testing.T) { testRevocations(t, open(t)) })
	t.Run("LiveAllocations", func(t *testing.T) { testLiveAllocations(t, open(t)) })
}

var t0 = time.Date(2020, 5, 1, 1, 42, 57, 0, time.UTC)

// Account returns a test account with SID "AC" + 32 hex digits derived from n.
func Account(n int, parent string) store.Account {
	return store.Account{
		Sid:          fmt.Sprintf("AC%032x", n),
		FriendlyName: fmt.Sprintf("account %d", n),
		AuthToken:    fmt.Sprintf("%032x", 1000+n),
		Status:       store.StatusActive,
		ParentSid:    parent,
		DateCreated:  t0.Add(time.Duration(n) * time.Second),
		DateUpdated:  t0.Add(time.Duration(n) * time.Second),
	}
}

// Key returns a test key of account with SID "SK" + 32 hex digits derived from n.
func Key(n int, account string) store.Key {
	return store.Key{
		Sid:          fmt.Sprintf("SK%032x", n),
		AccountSid:   account,
		FriendlyName: fmt.Sprintf("key %d", n),
		Secret:       fmt.Sprintf("Secret%026d", n),
		DateCreated:  t0.Add(time.Duration(n) * time.Second),
		DateUpdated:  t0.Add(time.Duration(n) * time.Second),
	}
}

func testAccounts(t *testing.T, s store.Store) {
	defer s.Close()
	ctx := context.Background()
	a := Account(1, "")
	must(t, s.CreateAccount(ctx, a))
	if err := s.CreateAccount(ctx, a); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate CreateAccount: got %v, want ErrExists", err)
	}
	sub := Account(2, a.Sid)
	must(t, s.CreateAccount(ctx, sub))
	if err := s.CreateAccount(ctx, Account(3, "AC"+fmt.Sprintf("%032x", 99))); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CreateAccount with unknown parent: got %v, want ErrNotFound", err)
	}

	got, err := s.GetAccount(ctx, a.Sid)
	must(t, err)
	if got != a {
		t.Fatalf("GetAccount = %+v, want %+v", got, a)
	}
	if got, _ := s.GetAccount(ctx, sub.Sid); got.ParentSid != a.Sid {
		t.Fatalf("subaccount parent = %q, want %q", got.ParentSid, a.Sid)
	}
	if _, err := s.GetAccount(ctx, "ACnope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetAccount unknown: got %v, want ErrNotFound", err)
	}

	a.Status = store.StatusSuspended
	a.AuthToken = "ffffffffffffffffffffffffffffffff"
	a.FriendlyName = "renamed"
	a.DateUpdated = a.DateUpdated.Add(time.Hour)
	must(t, s.UpdateAccount(ctx, a))
	if got, _ := s.GetAccount(ctx, a.Sid); got != a {
		t.Fatalf("after UpdateAccount = %+v, want %+v", got, a)
	}
	if err := s.UpdateAccount(ctx, Account(9, "")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateAccount unknown: got %v, want ErrNotFound", err)
	}

	list, err := s.ListAccounts(ctx)
	must(t, err)
	if len(list) != 2 || list[0].Sid != a.Sid || list[1].Sid != sub.Sid {
		t.Fatalf("ListAccounts = %+v", list)
	}
}

func testFirstAccount(t *testing.T, s store.Store) {
	defer s.Close()
	ctx := context.Background()
	ok, err := s.CreateFirstAccount(ctx, Account(1, ""))
	must(t, err)
	if !ok {
		t.Fatal("CreateFirstAccount on an empty store did not create")
	}
	ok, err = s.CreateFirstAccount(ctx, Account(2, ""))
	must(t, err)
	if ok {
		t.Fatal("CreateFirstAccount on a non-empty store created a second account")
	}
	if list, _ := s.ListAccounts(ctx); len(list) != 1 {
		t.Fatalf("%d accounts, want 1", len(list))
	}
}

func testKeys(t *testing.T, s store.Store) {
	defer s.Close()
	ctx := context.Background()
	a, b := Account(1, ""), Account(2, "")
	must(t, s.CreateAccount(ctx, a))
	must(t, s.CreateAccount(ctx, b))
	k1, k2, kb := Key(1, a.Sid), Key(2, a.Sid), Key(3, b.Sid)
	for _, k := range []store.Key{k2, k1, kb} {
		must(t, s.CreateKey(ctx, k))
	}
	if err := s.CreateKey(ctx, k1); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate CreateKey: got %v, want ErrExists", err)
	}
	if err := s.CreateKey(ctx, Key(4, "AC"+fmt.Sprintf("%032x", 99))); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CreateKey for unknown account: got %v, want ErrNotFound", err)
	}
	got, err := s.GetKey(ctx, k1.Sid)
	must(t, err)
	if got != k1 {
		t.Fatalf("GetKey = %+v, want %+v", got, k1)
	}
	list, err := s.ListKeys(ctx, a.Sid)
	must(t, err)
	if len(list) != 2 || list[0] != k1 || list[1] != k2 {
		t.Fatalf("ListKeys = %+v", list)
	}
	if err := s.DeleteKey(ctx, b.Sid, k1.Sid); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteKey with the wrong account: got %v, want ErrNotFound", err)
	}
	must(t, s.DeleteKey(ctx, a.Sid, k1.Sid))
	if _, err := s.GetKey(ctx, k1.Sid); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetKey after delete: got %v, want ErrNotFound", err)
	}
	if err := s.DeleteKey(ctx, a.Sid, k1.Sid); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteKey: got %v, want ErrNotFound", err)
	}
}

// testConcurrent has many goroutines write and read at once; every write must
// land and no call may fail with a lock error.
func testConcurrent(t *testing.T, s store.Store) {
	defer s.Close()
	ctx := context.Background()
	a := Account(1, "")
	must(t, s.CreateAccount(ctx, a))
	const workers, each = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*3)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				k := Key(1000+w*each+i, a.Sid)
				if err := s.CreateKey(ctx, k); err != nil {
					errs <- err
					continue
				}
				if got, err := s.GetKey(ctx, k.Sid); err != nil || got != k {
					errs <- fmt.Errorf("GetKey %s: %+v %v", k.Sid, got, err)
				}
				if _, err := s.GetAccount(ctx, a.Sid); err != nil {
					errs <- err
				}
				if i%2 == 0 {
					if err := s.DeleteKey(ctx, a.Sid, k.Sid); err != nil {
						errs <- err
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	keys, err := s.ListKeys(ctx, a.Sid)
	must(t, err)
	if want := workers * each / 2; len(keys) != want {
		t.Fatalf("%d keys left, want %d", len(keys), want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
