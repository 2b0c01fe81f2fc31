package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/traverse/traverse/store"
)

// The lookups every authentication makes (GetAccount, GetKey) are served
// from a cache of rows that is only trusted while the database file is
// unchanged, which every lookup checks first with SQLite's PRAGMA
// data_version on one connection set aside for it. data_version changes
// whenever any other connection — another of ours, the CLI in another
// process, another node on the same file — commits a change, so a key
// deleted or a token rotated anywhere is refused on the very next lookup:
// the check is exact, not a TTL. The check is one read transaction of a
// one-value statement (no row read, no AES-GCM opening, no allocation of
// the row); the cache also saves the sealed secret's decryption.

// maxCached bounds each of the account and key caches; a full cache is
// emptied (it refills with the rows in use).
const maxCached = 4096

// versionChecker runs PRAGMA data_version on its own connection, which
// never writes (data_version ignores the asking connection's own commits).
type versionChecker struct {
	conn *sql.Conn
	// stmt and dest belong to conn's driver connection; they are used only
	// inside conn.Raw, which holds that connection's lock.
	stmt driver.Stmt
	dest []driver.Value
}

func newVersionChecker(ctx context.Context, db *sql.DB) (*versionChecker, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	vc := &versionChecker{conn: conn, dest: make([]driver.Value, 1)}
	err = conn.Raw(func(dc any) error {
		p, ok := dc.(driver.ConnPrepareContext)
		if !ok {
			return errors.New("driver cannot prepare with a context")
		}
		st, err := p.PrepareContext(ctx, `PRAGMA data_version`)
		if err != nil {
			return err
		}
		if _, ok := st.(driver.StmtQueryContext); !ok {
			st.Close()
			return errors.New("driver statement cannot query with a context")
		}
		vc.stmt = st
		return nil
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if _, err := vc.version(ctx); err != nil {
		vc.close()
		return nil, err
	}
	return vc, nil
}

// version returns the connection's data version. ctx is checked first but
// not handed to the driver: with a cancellable context it starts a watcher
// goroutine per query, which would cost more than the query. The statement
// takes a WAL read lock only, which does not wait on writers.
func (vc *versionChecker) version(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var v int64
	err := vc.conn.Raw(func(any) error {
		rows, err := vc.stmt.(driver.StmtQueryContext).QueryContext(context.Background(), nil)
		if err != nil {
			return err
		}
		err = rows.Next(vc.dest)
		if cerr := rows.Close(); err == nil {
			err = cerr
		}
		if err == io.EOF {
			return errors.New("PRAGMA data_version returned no row")
		}
		if err != nil {
			return err
		}
		n, ok := vc.dest[0].(int64)
		if !ok {
			return fmt.Errorf("PRAGMA data_version returned %T", vc.dest[0])
		}
		v = n
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: data_version: %w", err)
	}
	return v, nil
}

func (vc *versionChecker) close() {
	_ = vc.conn.Raw(func(any) error { return vc.stmt.Close() })
	_ = vc.conn.Close()
}

// rowCache holds the accounts and keys read at one data version. A lookup
// passes the version it checked before reading the cache or the row; a
// different version empties the cache.
type rowCache struct {
	mu       sync.Mutex
	version  int64
	accounts map[string]store.Account
	keys     map[string]store.Key
}

func newRowCache() *rowCache {
	return &rowCache{accounts: map[string]store.Account{}, keys: map[string]store.Key{}}
}

// at makes v the cache's version, emptying the cache if it held another.
// Call with mu held. A lookup that checked before a commit may come after
// one that checked after it and swap the cache back to the older version:
// that costs a refill, never a stale answer, since every row is read after
// the version it is filed under was checked, and a version once left is
// never seen again (data_version only counts up).
func (c *rowCache) at(v int64) {
	if c.version != v {
		c.version = v
		clear(c.accounts)
		clear(c.keys)
	}
}

func (c *rowCache) account(v int64, sid string) (store.Account, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at(v)
	a, ok := c.accounts[sid]
	return a, ok
}

func (c *rowCache) putAccount(v int64, a store.Account) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at(v)
	if len(c.accounts) >= maxCached {
		clear(c.accounts)
	}
	c.accounts[a.Sid] = a
}

func (c *rowCache) key(v int64, sid string) (store.Key, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at(v)
	k, ok := c.keys[sid]
	return k, ok
}

func (c *rowCache) putKey(v int64, k store.Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at(v)
	if len(c.keys) >= maxCached {
		clear(c.keys)
	}
	c.keys[k.Sid] = k
}
