// Package sqlite is traverse's embedded store: SQLite through modernc.org/sqlite
// (pure Go, no cgo), in WAL mode with a busy timeout so several goroutines and
// processes can share one file. Importing it registers the "sqlite:" DSN
// scheme with store.Open. The lookups of authentication are cached behind an
// exact per-call check that the file is unchanged (cache.go).
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/traverse/traverse/store"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

func init() { store.Register("sqlite", Open) }

// BusyTimeout is how long a statement waits for another writer's lock.
const BusyTimeout = 5 * time.Second

// maxConns bounds the connection pool: readers run in parallel under WAL,
// writers queue on SQLite's lock.
const maxConns = 8

// Store is the SQLite implementation of store.Store.
type Store struct {
	db     *sql.DB
	cipher *store.Cipher
	// The reads every authentication makes, prepared once: parsing the SQL
	// was ~40% of an account lookup.
	getAccount, getKey *sql.Stmt
	// Their rows, trusted only while the file's data version is unchanged
	// (cache.go).
	versions *versionChecker
	cache    *rowCache
	// revWatchers hear of revocations added through this Store at once.
	revWatchers watchers
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database named by dsn, "sqlite:PATH",
// with the 32-byte encryption key, and runs the migrations. A new database
// file is created with mode 0600.
func Open(ctx context.Context, dsn string, key []byte) (store.Store, error) {
	return OpenFile(ctx, strings.TrimPrefix(dsn, "sqlite:"), key)
}

// OpenFile is Open with a plain file path.
func OpenFile(ctx context.Context, path string, key []byte) (*Store, error) {
	c, err := store.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") || path == ":memory:" {
		return nil, fmt.Errorf("sqlite: %q is not a usable database path", path)
	}
	if err := createFile(path); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(BusyTimeout.Milliseconds()))
	// FULL: a commit survives power loss (a key secret or auth token is shown
	// only once). Writes are rare; reads do not pay for it.
	q.Set("_synchronous", "FULL")
	q.Set("_foreign_keys", "1")
	// Write transactions take the write lock at BEGIN, so two of them never
	// deadlock upgrading a read lock; the busy timeout queues them instead.
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	// One more for the data-version check, which keeps its connection.
	db.SetMaxOpenConns(maxConns + 1)
	db.SetMaxIdleConns(maxConns + 1)
	if err := useWAL(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, cipher: c, cache: newRowCache()}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.checkKey(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if s.getAccount, err = db.PrepareContext(ctx, `SELECT `+accountCols+` FROM accounts WHERE sid = ?`); err == nil {
		s.getKey, err = db.PrepareContext(ctx, `SELECT `+keyCols+` FROM api_keys WHERE sid = ?`)
	}
	if err == nil {
		s.versions, err = newVersionChecker(ctx, db, path)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	return s, nil
}

// useWAL switches the file to WAL journaling, which the file then keeps for
// every later connection. The switch takes an exclusive lock without waiting
// on the busy timeout, so when several processes open a new file at once the
// losers get SQLITE_BUSY straight away; they retry until one has done it.
func useWAL(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(BusyTimeout)
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		var mode string
		err := db.QueryRowContext(ctx, `PRAGMA journal_mode = WAL`).Scan(&mode)
		if err == nil {
			if !strings.EqualFold(mode, "wal") {
				return fmt.Errorf("sqlite: the file stays in journal mode %q, not WAL", mode)
			}
			return nil
		}
		var se *sqlite.Error
		if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return fmt.Errorf("sqlite: journal mode: %w", err)
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// createFile makes the database's directory (0700) and an empty file (0600)
// when they do not exist yet, so SQLite never creates them world-readable.
func createFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("sqlite: create directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return f.Close()
}

// Close closes the database; SQLite checkpoints the WAL into the main file.
func (s *Store) Close() error {
	s.versions.close()
	_ = s.getAccount.Close()
	_ = s.getKey.Close()
	return s.db.Close()
}

// checkKey stores a sealed marker on first start and later refuses a key that
// does not open it, so a wrong store.encryption_key fails at start-up rather
// than at the first authentication.
func (s *Store) checkKey(ctx context.Context) error {
	var sealed []byte
	err := s.db.QueryRowContext(ctx, `SELECT value FROM store_meta WHERE name = 'key_check'`).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		v, err := s.cipher.Seal(store.KeyCheckPlaintext, store.KeyCheckAD)
		if err != nil {
			return err
		}
		_, err = s.db.ExecContext(ctx, `INSERT INTO store_meta (name, value) VALUES ('key_check', ?) ON CONFLICT (name) DO NOTHING`, v)
		if err != nil {
			return fmt.Errorf("sqlite: %w", err)
		}
		return s.checkKey(ctx)
	}
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if _, err := s.cipher.Open(sealed, store.KeyCheckAD); err != nil {
		return store.ErrWrongKey
	}
	return nil
}

// CreateAccount implements store.Store.
func (s *Store) CreateAccount(ctx context.Context, a store.Account) error {
	_, err := s.insertAccount(ctx, a, false)
	return err
}

// CreateFirstAccount implements store.Store.
func (s *Store) CreateFirstAccount(ctx context.Context, a store.Account) (bool, error) {
	return s.insertAccount(ctx, a, true)
}

func (s *Store) insertAccount(ctx context.Context, a store.Account, onlyIfEmpty bool) (bool, error) {
	tok, err := s.cipher.Seal(a.AuthToken, store.AuthTokenAD(a.Sid))
	if err != nil {
		return false, err
	}
	q := `INSERT INTO accounts (sid, friendly_name, auth_token, status, parent_sid, date_created, date_updated)
		SELECT ?, ?, ?, ?, ?, ?, ?`
	if onlyIfEmpty {
		q += ` WHERE NOT EXISTS (SELECT 1 FROM accounts)`
	}
	res, err := s.db.ExecContext(ctx, q, a.Sid, a.FriendlyName, tok, string(a.Status),
		nullable(a.ParentSid), a.DateCreated.UnixNano(), a.DateUpdated.UnixNano())
	if err != nil {
		return false, mapErr(err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

const accountCols = `sid, friendly_name, auth_token, status, COALESCE(parent_sid, ''), date_created, date_updated`

// GetAccount implements store.Store. It answers from the cache while the
// database is unchanged since the row was read (cache.go).
func (s *Store) GetAccount(ctx context.Context, sid string) (store.Account, error) {
	v, err := s.versions.version(ctx)
	if err != nil {
		return store.Account{}, err
	}
	if a, ok := s.cache.account(v, sid); ok {
		return a, nil
	}
	a, err := s.scanAccount(s.getAccount.QueryRowContext(ctx, sid))
	if err == nil {
		s.cache.putAccount(v, a)
	}
	return a, err
}

// ListAccounts implements store.Store.
func (s *Store) ListAccounts(ctx context.Context) ([]store.Account, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+accountCols+` FROM accounts ORDER BY date_created, sid`)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []store.Account
	for rows.Next() {
		a, err := s.scanAccount(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, mapErr(rows.Err())
}

// UpdateAccount implements store.Store.
func (s *Store) UpdateAccount(ctx context.Context, a store.Account) error {
	tok, err := s.cipher.Seal(a.AuthToken, store.AuthTokenAD(a.Sid))
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx,
		`UPDATE accounts SET friendly_name = ?, auth_token = ?, status = ?, date_updated = ? WHERE sid = ?`,
		a.FriendlyName, tok, string(a.Status), a.DateUpdated.UnixNano(), a.Sid)
	if err != nil {
		return mapErr(err)
	}
	return oneRow(res)
}

type scanner interface{ Scan(dest ...any) error }

func (s *Store) scanAccount(r scanner) (store.Account, error) {
	var (
		a        store.Account
		tok      []byte
		status   string
		cre, upd int64
	)
	if err := r.Scan(&a.Sid, &a.FriendlyName, &tok, &status, &a.ParentSid, &cre, &upd); err != nil {
		return store.Account{}, mapErr(err)
	}
	var err error
	if a.AuthToken, err = s.cipher.Open(tok, store.AuthTokenAD(a.Sid)); err != nil {
		return store.Account{}, fmt.Errorf("sqlite: auth token of %s: %w", a.Sid, store.ErrWrongKey)
	}
	a.Status = store.Status(status)
	a.DateCreated, a.DateUpdated = fromNanos(cre), fromNanos(upd)
	return a, nil
}

// CreateKey implements store.Store.
func (s *Store) CreateKey(ctx context.Context, k store.Key) error {
	sec, err := s.cipher.Seal(k.Secret, store.KeySecretAD(k.Sid))
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx,
		`INSERT INTO api_keys (sid, account_sid, friendly_name, secret, date_created, date_updated) VALUES (?, ?, ?, ?, ?, ?)`,
		k.Sid, k.AccountSid, k.FriendlyName, sec, k.DateCreated.UnixNano(), k.DateUpdated.UnixNano())
	return mapErr(err)
}

const keyCols = `sid, account_sid, friendly_name, secret, date_created, date_updated`

// GetKey implements store.Store, cached as GetAccount.
func (s *Store) GetKey(ctx context.Context, sid string) (store.Key, error) {
	v, err := s.versions.version(ctx)
	if err != nil {
		return store.Key{}, err
	}
	if k, ok := s.cache.key(v, sid); ok {
		return k, nil
	}
	k, err := s.scanKey(s.getKey.QueryRowContext(ctx, sid))
	if err == nil {
		s.cache.putKey(v, k)
	}
	return k, err
}

// ListKeys implements store.Store.
func (s *Store) ListKeys(ctx context.Context, accountSid string) ([]store.Key, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT `+keyCols+` FROM api_keys WHERE account_sid = ? ORDER BY date_created, sid`, accountSid)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []store.Key
	for rows.Next() {
		k, err := s.scanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, mapErr(rows.Err())
}

// DeleteKey implements store.Store.
func (s *Store) DeleteKey(ctx context.Context, accountSid, sid string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM api_keys WHERE sid = ? AND account_sid = ?`, sid, accountSid)
	if err != nil {
		return mapErr(err)
	}
	return oneRow(res)
}

func (s *Store) scanKey(r scanner) (store.Key, error) {
	var (
		k        store.Key
		sec      []byte
		cre, upd int64
	)
	if err := r.Scan(&k.Sid, &k.AccountSid, &k.FriendlyName, &sec, &cre, &upd); err != nil {
		return store.Key{}, mapErr(err)
	}
	var err error
	if k.Secret, err = s.cipher.Open(sec, store.KeySecretAD(k.Sid)); err != nil {
		return store.Key{}, fmt.Errorf("sqlite: secret of %s: %w", k.Sid, store.ErrWrongKey)
	}
	k.DateCreated, k.DateUpdated = fromNanos(cre), fromNanos(upd)
	return k, nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func oneRow(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// mapErr turns database errors into the store's sentinels.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return fmt.Errorf("%w: %v", store.ErrExists, err)
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("%w: %v", store.ErrNotFound, err)
		}
	}
	return fmt.Errorf("sqlite: %w", err)
}
