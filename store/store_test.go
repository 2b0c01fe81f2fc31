package store_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/traverse/traverse/store"
)

func TestLoadOrCreateKeyCreatesOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := store.LoadOrCreateKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != store.KeySize {
		t.Fatalf("key is %d bytes", len(k1))
	}
	fi, err := os.Stat(filepath.Join(dir, store.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("key file mode %#o, want 0600", perm)
	}
	k2, err := store.LoadOrCreateKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1, k2) {
		t.Fatal("second start read a different key")
	}
}

func TestLoadOrCreateKeyConcurrentFirstStart(t *testing.T) {
	dir := t.TempDir()
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			k, err := store.LoadOrCreateKey(dir, "")
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}(i)
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) {
			t.Fatal("concurrent first starts disagree on the key")
		}
	}
}

func TestLoadOrCreateKeyRefusesLoosePermissions(t *testing.T) {
	dir := t.TempDir()
	if _, err := store.LoadOrCreateKey(dir, ""); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, store.KeyFileName)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := store.LoadOrCreateKey(dir, "")
		if err == nil || !strings.Contains(err.Error(), "0600") {
			t.Fatalf("mode %#o: got %v, want a refusal", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := store.LoadOrCreateKey(dir, ""); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestLoadOrCreateKeyFromConfig(t *testing.T) {
	want := bytes.Repeat([]byte{0xab}, 32)
	dir := t.TempDir()
	got, err := store.LoadOrCreateKey(dir, hex.EncodeToString(want))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("got %x, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, store.KeyFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a configured key must not create a key file")
	}
	for _, bad := range []string{"abc", strings.Repeat("zz", 32), strings.Repeat("ab", 31)} {
		if _, err := store.LoadOrCreateKey(dir, bad); err == nil {
			t.Fatalf("key %q accepted", bad)
		}
	}
}

func TestLoadOrCreateKeyRejectsGarbageFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, store.KeyFileName), []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.LoadOrCreateKey(dir, ""); err == nil {
		t.Fatal("garbage key file accepted")
	}
}

func TestCipher(t *testing.T) {
	c, err := store.NewCipher(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := c.Seal("s3cret", "row:1")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("s3cret")) {
		t.Fatal("sealed value holds the plaintext")
	}
	if got, err := c.Open(sealed, "row:1"); err != nil || got != "s3cret" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := c.Open(sealed, "row:2"); err == nil {
		t.Fatal("opened with another row's associated data")
	}
	other, _ := store.NewCipher(bytes.Repeat([]byte{2}, 32))
	if _, err := other.Open(sealed, "row:1"); err == nil {
		t.Fatal("opened with another key")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := c.Open(sealed, "row:1"); err == nil {
		t.Fatal("opened an altered value")
	}
	if _, err := store.NewCipher(make([]byte, 16)); err == nil {
		t.Fatal("16-byte key accepted")
	}
}

func TestOpenDSN(t *testing.T) {
	key := make([]byte, 32)
	// This package's tests link no backend: the error says what to import,
	// and never shows the DSN's password.
	for _, dsn := range []string{"postgres://u:pw-not-shown@h/db", "postgresql://h/db"} {
		_, err := store.Open(context.Background(), dsn, key)
		if !errors.Is(err, store.ErrUnsupported) || !strings.Contains(err.Error(), "store/postgres") ||
			strings.Contains(err.Error(), "pw-not-shown") {
			t.Fatalf("%s: got %v", dsn, err)
		}
	}
	if _, err := store.Open(context.Background(), "mysql://x", key); !errors.Is(err, store.ErrUnsupported) {
		t.Fatalf("mysql: got %v", err)
	}
	// This package's tests do not link store/sqlite: the error says what to import.
	if _, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "x.db"), key); err == nil ||
		!strings.Contains(err.Error(), "store/sqlite") {
		t.Fatalf("sqlite without the backend linked: got %v", err)
	}
	if got := store.DefaultDSN("/var/lib/traverse", ""); got != "sqlite:/var/lib/traverse/traverse.db" {
		t.Fatalf("DefaultDSN = %q", got)
	}
}
