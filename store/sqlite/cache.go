package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/traverse/traverse/store"
)

// The lookups every authentication makes (GetAccount, GetKey) are served
// from a cache of rows that is only trusted while the database is
// unchanged, which every lookup checks first, exactly:
//
//   - The authority is SQLite's PRAGMA data_version, run on one connection
//     set aside for it (which never writes): it changes whenever any other
//     connection — another of ours, the CLI in another process, another
//     node on the same file — commits. It costs a read transaction, ~10 µs,
//     most of it two fcntl locks on the shared-memory file.
//   - Before it, a lookup reads the 96-byte wal-index header from the start
//     of the "-shm" file (one pread, ~1 µs). In WAL mode this header is how
//     every reader, data_version's included, learns of commits: a commit
//     rewrites it (its change counter, frame count, checksums) before the
//     committing call returns, and a reader that finds it as it was reuses
//     what it had read. So while the header is byte for byte what it was
//     when data_version was last asked, the data version is still the
//     same. Any difference, or a torn read of the header in the middle of a
//     commit (its two copies differ), goes to data_version. The layout is
//     SQLite's documented and stable file format
//     (https://sqlite.org/walformat.html); TestWALIndexHeader guards it.
//
// So a key deleted or a token rotated anywhere is refused on the very next
// lookup: the check is exact, not a TTL. A cache hit saves the row's read
// and the AES-GCM opening of its secret.

// maxCached bounds each of the account and key caches (about 300 bytes a
// row, so ~5 MB each when full). A full cache drops one row, whichever Go's
// map iteration starts at, for each row it files: emptying it whole, as
// before, meant that callers cycling through more accounts than it holds
// (10,000 in the bench's issuer run, against 4,096) never hit at all.
const maxCached = 16384

// walIndexHeader is the size of the wal-index header: two copies of a
// 48-byte WalIndexHdr, written second copy first.
const walIndexHeader = 96

// versionChecker answers the data version: from the wal-index header while
// it is unchanged, else from PRAGMA data_version on its own connection.
//
// Lookups that arrive while a check runs share the next one: a check that
// started after a lookup arrived sees every commit that had returned by
// then, which is all a lookup of its own would see (group commit, for
// reads).
type versionChecker struct {
	conn *sql.Conn
	// shm is the database's "-shm" file, opened read-only; nil when it
	// could not be opened (then every check asks data_version).
	shm *os.File
	// started counts the checks begun; queries those that asked
	// data_version.
	started, queries atomic.Uint64
	// mu is held while a check runs, and guards what follows.
	mu sync.Mutex
	// last is the value of check number lastSeq, the latest finished.
	last    int64
	lastSeq uint64
	// hdr is the wal-index header read just before data_version last
	// answered last; hdrOK says whether it was read whole and consistent.
	hdr   [walIndexHeader / 2]byte
	hdrOK bool
	// stmt and dest belong to conn's driver connection.
	stmt driver.Stmt
	dest []driver.Value
}

func newVersionChecker(ctx context.Context, db *sql.DB, path string) (*versionChecker, error) {
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
	// The connection is open in WAL mode, so the file exists, and stays as
	// long as a connection of this process is open.
	if f, err := os.OpenFile(path+"-shm", os.O_RDONLY, 0); err == nil {
		vc.shm = f
	}
	return vc, nil
}

// version returns the data version as of some moment after the call began.
func (vc *versionChecker) version(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	arrived := vc.started.Load()
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if vc.lastSeq > arrived {
		// That check was begun after this call: its answer will do.
		return vc.last, nil
	}
	seq := vc.started.Add(1)
	hdr, hdrOK := vc.readHeader()
	if hdrOK && vc.hdrOK && hdr == vc.hdr {
		// No commit since data_version answered vc.last.
		vc.lastSeq = seq
		return vc.last, nil
	}
	vc.queries.Add(1)
	v, err := vc.query()
	if err != nil {
		vc.hdrOK = false
		return 0, fmt.Errorf("sqlite: data_version: %w", err)
	}
	// hdr was read before the query: a commit in between changes the
	// header, so the next check asks data_version again.
	vc.last, vc.lastSeq, vc.hdr, vc.hdrOK = v, seq, hdr, hdrOK
	return v, nil
}

// readHeader reads the wal-index header; ok when both copies were read and
// agree (they differ while a commit is writing them).
func (vc *versionChecker) readHeader() (h [walIndexHeader / 2]byte, ok bool) {
	if vc.shm == nil {
		return h, false
	}
	var b [walIndexHeader]byte
	if n, err := vc.shm.ReadAt(b[:], 0); n != len(b) || err != nil {
		return h, false
	}
	copy(h[:], b[:len(h)])
	return h, [len(h)]byte(b[len(h):]) == h
}

// query runs the statement. The context is not handed to the driver: with a
// cancellable one it starts a watcher goroutine per query, which would cost
// more than the query. The statement takes a WAL read lock only, which does
// not wait on writers.
func (vc *versionChecker) query() (int64, error) {
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
	return v, err
}

func (vc *versionChecker) close() {
	if vc.shm != nil {
		_ = vc.shm.Close()
	}
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
	return cached(c, v, c.accounts, sid)
}

func (c *rowCache) putAccount(v int64, a store.Account) { keep(c, v, c.accounts, a.Sid, a) }

func (c *rowCache) key(v int64, sid string) (store.Key, bool) { return cached(c, v, c.keys, sid) }

func (c *rowCache) putKey(v int64, k store.Key) { keep(c, v, c.keys, k.Sid, k) }

// cached looks sid up in one of c's maps as of data_version v.
func cached[T any](c *rowCache, v int64, m map[string]T, sid string) (T, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at(v)
	row, ok := m[sid]
	return row, ok
}

// keep files row under sid in one of c's maps as of data_version v.
func keep[T any](c *rowCache, v int64, m map[string]T, sid string, row T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at(v)
	if _, ok := m[sid]; !ok && len(m) >= maxCached {
		for k := range m {
			delete(m, k)
			break
		}
	}
	m[sid] = row
}
