package sqlite

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/traverse/traverse/store"
)

// TestWALIndexHeader guards what the version check assumes of SQLite's
// wal-index header (cache.go): it sits at the start of "<db>-shm" as two
// equal copies, a commit through another connection changes it, and reads
// leave it alone — so unchanged lookups skip data_version, and a commit
// sends the next lookup to it.
func TestWALIndexHeader(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "traverse.db")
	key := bytes.Repeat([]byte{7}, 32)
	s, err := OpenFile(ctx, path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := OpenFile(ctx, path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	vc := s.versions
	if vc.shm == nil {
		t.Fatal("the -shm file was not opened")
	}
	header := func() [walIndexHeader / 2]byte {
		t.Helper()
		b, err := os.ReadFile(path + "-shm")
		if err != nil || len(b) < walIndexHeader {
			t.Fatalf("read -shm: %d bytes, %v", len(b), err)
		}
		if !bytes.Equal(b[:walIndexHeader/2], b[walIndexHeader/2:walIndexHeader]) {
			t.Fatal("the two copies of the wal-index header differ at rest")
		}
		return [walIndexHeader / 2]byte(b)
	}

	a := store.Account{Sid: "AC00000000000000000000000000000001", FriendlyName: "a", AuthToken: "t1", Status: store.StatusActive}
	if err := other.CreateAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	h0 := header()
	if _, err := s.GetAccount(ctx, a.Sid); err != nil {
		t.Fatal(err)
	}
	q := vc.queries.Load()
	for range 5 {
		if got, err := s.GetAccount(ctx, a.Sid); err != nil || got.AuthToken != "t1" {
			t.Fatalf("GetAccount = %+v, %v", got, err)
		}
	}
	if n := vc.queries.Load() - q; n != 0 {
		t.Fatalf("%d data_version queries for lookups with nothing committed, want 0", n)
	}
	if header() != h0 {
		t.Fatal("reads changed the wal-index header")
	}

	a.AuthToken = "t2"
	if err := other.UpdateAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if header() == h0 {
		t.Fatal("a commit left the wal-index header as it was")
	}
	if got, err := s.GetAccount(ctx, a.Sid); err != nil || got.AuthToken != "t2" {
		t.Fatalf("after another connection's commit: %+v, %v", got, err)
	}
	if n := vc.queries.Load() - q; n != 1 {
		t.Fatalf("%d data_version queries after a commit, want 1", n)
	}
}

// TestRowCacheFullDropsOne: a full cache drops one row for each new one, so
// that lookups cycling through more rows than it holds still mostly hit
// (emptying it whole left it empty of the rows about to be asked again).
func TestRowCacheFullDropsOne(t *testing.T) {
	c := newRowCache()
	for i := range maxCached + 100 {
		c.putAccount(1, store.Account{Sid: fmt.Sprintf("AC%032d", i)})
	}
	if n := len(c.accounts); n != maxCached {
		t.Fatalf("cache holds %d rows, want %d", n, maxCached)
	}
	if _, ok := c.account(1, fmt.Sprintf("AC%032d", maxCached+99)); !ok {
		t.Fatal("the row filed last is not in the cache")
	}
	// Filing a row already held drops nothing.
	c.putAccount(1, store.Account{Sid: fmt.Sprintf("AC%032d", maxCached+99)})
	if n := len(c.accounts); n != maxCached {
		t.Fatalf("refiling a held row left %d rows, want %d", n, maxCached)
	}
	// Another data version empties it.
	if _, ok := c.account(2, fmt.Sprintf("AC%032d", maxCached+99)); ok || len(c.accounts) != 0 {
		t.Fatal("a new data version kept the old rows")
	}
}
