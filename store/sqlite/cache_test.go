package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/traverse/traverse/store"
	"github.com/traverse/traverse/store/sqlite"
	"github.com/traverse/traverse/store/storetest"
)

// The environment of TestHelperProcess: the database, then what to do.
const (
	helperDB  = "TRAVERSE_SQLITE_HELPER_DB"
	helperCmd = "TRAVERSE_SQLITE_HELPER_CMD"
)

// TestHelperProcess is not a test: run by otherProcess, it changes the
// database from another process, as `traverse keys delete` or `traverse
// accounts` would while the server runs.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperDB)
	if path == "" {
		t.Skip("helper process only")
	}
	ctx := context.Background()
	s, err := sqlite.OpenFile(ctx, path, testKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer s.Close()
	var op, a, b string
	fmt.Sscan(os.Getenv(helperCmd), &op, &a, &b)
	switch op {
	case "delete-key": // account key
		err = s.DeleteKey(ctx, a, b)
	case "rotate": // account new-token
		var acct store.Account
		if acct, err = s.GetAccount(ctx, a); err == nil {
			acct.AuthToken = b
			err = s.UpdateAccount(ctx, acct)
		}
	case "suspend": // account
		var acct store.Account
		if acct, err = s.GetAccount(ctx, a); err == nil {
			acct.Status = store.StatusSuspended
			err = s.UpdateAccount(ctx, acct)
		}
	default:
		err = fmt.Errorf("unknown helper command %q", op)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// otherProcess runs cmd on the database at path in a separate process.
func otherProcess(t *testing.T, path, cmd string) {
	t.Helper()
	c := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	c.Env = append(os.Environ(), helperDB+"="+path, helperCmd+"="+cmd)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("helper %q: %v\n%s", cmd, err, out)
	}
}

// TestCacheSeesOtherProcess: lookups are cached, yet a key deleted, an auth
// token rotated or an account suspended by another process is seen by the
// very next lookup (the cache is checked against PRAGMA data_version).
func TestCacheSeesOtherProcess(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	defer s.Close()
	a := storetest.Account(1, "")
	must(t, s.CreateAccount(ctx, a))
	for i := range 2 {
		k := storetest.Key(10+i, a.Sid)
		must(t, s.CreateKey(ctx, k))
		for range 3 { // fill the cache and use it
			if got, err := s.GetKey(ctx, k.Sid); err != nil || got != k {
				t.Fatalf("GetKey = %+v, %v", got, err)
			}
			if got, err := s.GetAccount(ctx, a.Sid); err != nil || got != a {
				t.Fatalf("GetAccount = %+v, %v; want %+v", got, err, a)
			}
		}
		otherProcess(t, path, "delete-key "+a.Sid+" "+k.Sid)
		if _, err := s.GetKey(ctx, k.Sid); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("key deleted by another process: got %v, want ErrNotFound", err)
		}
		a.AuthToken = fmt.Sprintf("rotated%025d", i)
		otherProcess(t, path, "rotate "+a.Sid+" "+a.AuthToken)
		if got, err := s.GetAccount(ctx, a.Sid); err != nil || got.AuthToken != a.AuthToken {
			t.Fatalf("token rotated by another process: got %q, %v; want %q", got.AuthToken, err, a.AuthToken)
		}
	}
	otherProcess(t, path, "suspend "+a.Sid)
	if got, err := s.GetAccount(ctx, a.Sid); err != nil || got.Status != store.StatusSuspended {
		t.Fatalf("account suspended by another process: got %q, %v", got.Status, err)
	}
}

// TestCacheLinearizable: while many goroutines look a key up through one
// handle, another handle on the file deletes it. No lookup that starts after
// the delete has returned may find the key.
func TestCacheLinearizable(t *testing.T) {
	ctx := context.Background()
	s1, s2 := openTwoHandles(t)
	a := storetest.Account(1, "")
	must(t, s1.CreateAccount(ctx, a))
	for round := range 20 {
		k := storetest.Key(100+round, a.Sid)
		must(t, s2.CreateKey(ctx, k))
		var deleted atomic.Bool
		stop := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					after := deleted.Load()
					_, err := s1.GetKey(ctx, k.Sid)
					if after && err == nil {
						errs <- fmt.Errorf("round %d: lookup started after the delete found the key", round)
						return
					}
					if err != nil && !errors.Is(err, store.ErrNotFound) {
						errs <- err
						return
					}
				}
			}()
		}
		must(t, s2.DeleteKey(ctx, a.Sid, k.Sid))
		deleted.Store(true)
		// Let the readers run on after the delete for a while.
		for range 50 {
			if _, err := s1.GetKey(ctx, k.Sid); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("round %d: after the delete: %v", round, err)
			}
		}
		close(stop)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
}
