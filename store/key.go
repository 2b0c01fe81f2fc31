package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeyFileName is the key file LoadOrCreateKey keeps in the data directory.
const KeyFileName = "store.key"

// LoadOrCreateKey returns the 32-byte key that encrypts secrets at rest. With
// hexKey set (store.encryption_key, 64 hex characters) it decodes that. Else
// it reads <dataDir>/store.key, creating it with mode 0600 (and dataDir with
// 0700) on first start; an existing key file readable or writable by group or
// others is refused, as is one that does not hold 64 hex characters.
func LoadOrCreateKey(dataDir, hexKey string) ([]byte, error) {
	if hexKey != "" {
		return decodeKey(hexKey, "store.encryption_key")
	}
	if dataDir == "" {
		return nil, errors.New("store: no encryption key: set store.encryption_key or data_dir")
	}
	path := filepath.Join(dataDir, KeyFileName)
	key, err := readKeyFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create data dir: %w", err)
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	// Write the key to a temporary file, then link it into place: the link
	// is atomic, so a process that loses the race to create store.key never
	// reads a half-written one.
	f, err := os.CreateTemp(dataDir, ".store.key-*")
	if err != nil {
		return nil, fmt.Errorf("store: create key file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: create key file: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: write key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("store: write key file: %w", err)
	}
	if err := os.Link(tmp, path); errors.Is(err, fs.ErrExist) {
		// Another process created it first: use theirs.
		return readKeyFile(path)
	} else if err != nil {
		return nil, fmt.Errorf("store: create key file: %w", err)
	}
	return key, nil
}

func readKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("store: key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("store: key file %s has mode %#o; refusing it: it must be 0600 (chmod 600 %s)", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeKey(strings.TrimSpace(string(data)), path)
}

func decodeKey(s, where string) ([]byte, error) {
	key, err := hex.DecodeString(s)
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("store: %s must hold %d hex characters (%d bytes)", where, 2*KeySize, KeySize)
	}
	return key, nil
}
