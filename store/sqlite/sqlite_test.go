package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/traverse/traverse/store"
	"github.com/traverse/traverse/store/sqlite"
	"github.com/traverse/traverse/store/storetest"
)

var testKey = bytes.Repeat([]byte{7}, 32)

func openTemp(t *testing.T) (*sqlite.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "traverse.db")
	s, err := sqlite.OpenFile(context.Background(), path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

// openTwoHandles opens a temporary store twice on the same file, as two
// nodes sharing it would; both close when the test ends.
func openTwoHandles(t *testing.T) (s1, s2 *sqlite.Store) {
	t.Helper()
	s1, path := openTemp(t)
	t.Cleanup(func() { _ = s1.Close() })
	s2, err := sqlite.OpenFile(context.Background(), path, testKey)
	must(t, err)
	t.Cleanup(func() { _ = s2.Close() })
	return s1, s2
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openTemp(t)
		return s
	})
}

func TestOpenThroughStoreOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := store.OpenConfigured(context.Background(), filepath.Join(dir, "data"), "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{"traverse.db", store.KeyFileName} {
		fi, err := os.Stat(filepath.Join(dir, "data", name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %#o, want 0600", name, perm)
		}
	}
}

func TestReopenKeepsAccountsAndKeys(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	a := storetest.Account(1, "")
	k := storetest.Key(1, a.Sid)
	must(t, s.CreateAccount(ctx, a))
	must(t, s.CreateKey(ctx, k))
	must(t, s.Close())

	s2, err := sqlite.OpenFile(ctx, path, testKey)
	must(t, err)
	defer s2.Close()
	if got, err := s2.GetAccount(ctx, a.Sid); err != nil || got != a {
		t.Fatalf("account after reopen: %+v, %v", got, err)
	}
	if got, err := s2.GetKey(ctx, k.Sid); err != nil || got != k {
		t.Fatalf("key after reopen: %+v, %v", got, err)
	}
}

func TestWrongKeyRefused(t *testing.T) {
	s, path := openTemp(t)
	must(t, s.Close())
	_, err := sqlite.OpenFile(context.Background(), path, bytes.Repeat([]byte{8}, 32))
	if !errors.Is(err, store.ErrWrongKey) {
		t.Fatalf("open with another key: got %v, want ErrWrongKey", err)
	}
}

// TestNoSecretInClearText writes secrets, closes, and greps every file the
// database left for them (main file, WAL, shared memory).
func TestNoSecretInClearText(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	a := storetest.Account(1, "")
	k := storetest.Key(1, a.Sid)
	must(t, s.CreateAccount(ctx, a))
	must(t, s.CreateKey(ctx, k))
	a.AuthToken = "0123456789abcdef0123456789abcdef"
	must(t, s.UpdateAccount(ctx, a))

	check := func(when string) {
		files, _ := filepath.Glob(path + "*")
		if len(files) == 0 {
			t.Fatal("no database files")
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			must(t, err)
			for _, secret := range []string{a.AuthToken, storetest.Account(1, "").AuthToken, k.Secret} {
				if bytes.Contains(data, []byte(secret)) {
					t.Errorf("%s: %s holds a secret in clear text", when, filepath.Base(f))
				}
			}
			if when == "closed" && !bytes.Contains(data, []byte(a.Sid)) && filepath.Base(f) == "traverse.db" {
				t.Errorf("%s: the database does not even hold the account SID; the grep proves nothing", when)
			}
		}
	}
	check("open")
	must(t, s.Close())
	check("closed")
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	must(t, s.CreateAccount(ctx, storetest.Account(1, "")))
	must(t, s.Close())
	for i := 0; i < 2; i++ {
		s, err := sqlite.OpenFile(ctx, path, testKey)
		must(t, err)
		must(t, s.Close())
	}
	db, err := sql.Open("sqlite", path)
	must(t, err)
	defer db.Close()
	var n, max int
	must(t, db.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &max))
	if n != sqlite.SchemaVersion || max != sqlite.SchemaVersion {
		t.Fatalf("schema_migrations has %d rows up to %d, want %d", n, max, sqlite.SchemaVersion)
	}
	var accounts int
	must(t, db.QueryRow(`SELECT COUNT(*) FROM accounts`).Scan(&accounts))
	if accounts != 1 {
		t.Fatalf("%d accounts after reopening, want 1", accounts)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	s, path := openTemp(t)
	must(t, s.Close())
	db, err := sql.Open("sqlite", path)
	must(t, err)
	_, err = db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)`)
	must(t, err)
	must(t, db.Close())
	if _, err := sqlite.OpenFile(context.Background(), path, testKey); err == nil {
		t.Fatal("opened a database from a newer build")
	}
}

// TestConcurrentOpen starts several stores on one new file at once, as nodes
// sharing a volume would: the switch to WAL and the migrations must
// serialise, none failing with SQLITE_BUSY (which the switch to WAL once
// returned at once, without waiting out the busy timeout: 14 of 600 runs
// of six stores). Several new files per run make the race likelier.
func TestConcurrentOpen(t *testing.T) {
	for file := 0; file < 5; file++ {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("traverse-%d.db", file))
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := sqlite.OpenFile(context.Background(), path, testKey)
				if err != nil {
					t.Error(err)
					return
				}
				s.Close()
			}()
		}
		wg.Wait()
		db, err := sql.Open("sqlite", path)
		must(t, err)
		var n, max int
		must(t, db.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &max))
		var mode string
		must(t, db.QueryRow(`PRAGMA journal_mode`).Scan(&mode))
		must(t, db.Close())
		if n != sqlite.SchemaVersion || max != sqlite.SchemaVersion || mode != "wal" {
			t.Fatalf("after concurrent opens: %d migrations up to %d, journal mode %q; want %d, %d, wal",
				n, max, mode, sqlite.SchemaVersion, sqlite.SchemaVersion)
		}
	}
}

// TestDeleteSeenByOtherHandle deletes a key through one handle and looks it up
// through another on the same file, as two nodes sharing the store would.
func TestDeleteSeenByOtherHandle(t *testing.T) {
	ctx := context.Background()
	s1, s2 := openTwoHandles(t)
	a := storetest.Account(1, "")
	k := storetest.Key(1, a.Sid)
	must(t, s1.CreateAccount(ctx, a))
	must(t, s1.CreateKey(ctx, k))
	if _, err := s2.GetKey(ctx, k.Sid); err != nil {
		t.Fatal(err)
	}
	must(t, s1.DeleteKey(ctx, a.Sid, k.Sid))
	if _, err := s2.GetKey(ctx, k.Sid); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other handle after delete: got %v, want ErrNotFound", err)
	}
}

func TestBadPaths(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro"} {
		if _, err := sqlite.OpenFile(context.Background(), p, testKey); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
