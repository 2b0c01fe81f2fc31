package sqlite_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/traverse/traverse/store"
	"github.com/traverse/traverse/store/sqlite"
	"github.com/traverse/traverse/store/storetest"
)

// TestOutageGrace: with the database closed, rows read within the grace
// answer, older ones and never-read ones fail, and a row the database said
// was gone is not served from memory.
func TestOutageGrace(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.OpenFile(ctx, filepath.Join(t.TempDir(), "t.db"), bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	stale := 0
	st := store.WithOutageGrace(db, time.Minute, func() time.Time { return now }, func() { stale++ })
	a, other := storetest.Account(1, ""), storetest.Account(2, "")
	k, gone := storetest.Key(1, a.Sid), storetest.Key(2, a.Sid)
	for _, err := range []error{st.CreateAccount(ctx, a), st.CreateAccount(ctx, other), st.CreateKey(ctx, k), st.CreateKey(ctx, gone)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, sid := range []string{k.Sid, gone.Sid} {
		if _, err := st.GetKey(ctx, sid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.GetAccount(ctx, a.Sid); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteKey(ctx, a.Sid, gone.Sid); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetKey(ctx, gone.Sid); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}

	db.Close() // the outage
	now = now.Add(30 * time.Second)
	if got, err := st.GetAccount(ctx, a.Sid); err != nil || got.AuthToken != a.AuthToken {
		t.Fatalf("account read 30s before the outage: %+v, %v", got, err)
	}
	if got, err := st.GetKey(ctx, k.Sid); err != nil || got.Secret != k.Secret {
		t.Fatalf("key read 30s before the outage: %+v, %v", got, err)
	}
	if _, err := st.GetKey(ctx, gone.Sid); err == nil {
		t.Fatal("a key the database said was deleted was served during the outage")
	}
	if _, err := st.GetAccount(ctx, other.Sid); err == nil {
		t.Fatal("an account never read was served during the outage")
	}
	now = now.Add(31 * time.Second)
	if _, err := st.GetAccount(ctx, a.Sid); err == nil {
		t.Fatal("an account read more than the grace ago was served")
	}
	if stale != 2 {
		t.Fatalf("stale answers counted %d, want 2", stale)
	}
	if store.WithOutageGrace(db, 0, nil, nil) != store.Store(db) {
		t.Fatal("grace 0 must return the store itself")
	}
}
