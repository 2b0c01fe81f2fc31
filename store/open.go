package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
)

// OpenFunc opens one backend. dsn is the whole DSN, key the 32-byte
// encryption key.
type OpenFunc func(ctx context.Context, dsn string, key []byte) (Store, error)

var (
	driversMu sync.RWMutex
	drivers   = map[string]OpenFunc{}
)

// Register makes a backend available to Open under a DSN scheme ("sqlite",
// "postgres"). Backends call it from init, so a program links one in with an
// import (the traverse command imports store/sqlite and store/postgres).
func Register(scheme string, open OpenFunc) {
	driversMu.Lock()
	defer driversMu.Unlock()
	if _, dup := drivers[scheme]; dup {
		panic("store: Register called twice for " + scheme)
	}
	drivers[scheme] = open
}

// Open opens the store named by dsn: "sqlite:PATH" for the embedded SQLite
// backend, a "postgres://" or "postgresql://" URL for the PostgreSQL backend
// (registered as "postgres"). Migrations run before Open returns.
func Open(ctx context.Context, dsn string, key []byte) (Store, error) {
	var scheme string
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		scheme = "sqlite"
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		scheme = "postgres"
	default:
		return nil, fmt.Errorf("%w: want sqlite:PATH or postgres://…", ErrUnsupported)
	}
	driversMu.RLock()
	open := drivers[scheme]
	driversMu.RUnlock()
	if open == nil {
		return nil, fmt.Errorf("%w: %s backend not linked in (import github.com/traverse/traverse/store/%s)", ErrUnsupported, scheme, scheme)
	}
	return open(ctx, dsn, key)
}

// DefaultDSN returns dsn, or when it is empty the default
// "sqlite:<dataDir>/traverse.db".
func DefaultDSN(dataDir, dsn string) string {
	if dsn != "" {
		return dsn
	}
	return "sqlite:" + filepath.Join(dataDir, "traverse.db")
}

// OpenConfigured opens the store as traverse serve does from the config keys
// data_dir, store.dsn and store.encryption_key: the key from LoadOrCreateKey,
// the DSN from DefaultDSN.
func OpenConfigured(ctx context.Context, dataDir, dsn, hexKey string) (Store, error) {
	key, err := LoadOrCreateKey(dataDir, hexKey)
	if err != nil {
		return nil, err
	}
	return Open(ctx, DefaultDSN(dataDir, dsn), key)
}
