// Package postgres is traverse's shared store: PostgreSQL through
// github.com/jackc/pgx/v5 (a pgxpool connection pool), so several traverse
// nodes serve one set of accounts and API keys. Importing it registers the
// "postgres" backend, which store.Open uses for postgres:// and postgresql://
// DSNs.
//
// It keeps the SQLite store's semantics: versioned migrations in
// schema_migrations run at open (in one transaction under an advisory lock,
// so nodes starting together do not race), a wrong encryption key is refused
// at open with store.ErrWrongKey, secrets are sealed with store.Cipher before
// they are sent to the server, and nothing is cached — every call reads the
// database, so a key deleted through one node is refused by every node at once.
// Times are stored as timestamptz, to the microsecond.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/traverse/traverse/store"
)

func init() { store.Register("postgres", Open) }

// ConnectTimeout bounds each connection attempt when the DSN sets no
// connect_timeout.
const ConnectTimeout = 10 * time.Second

// PostgreSQL error codes the store maps to its sentinels.
const (
	codeUniqueViolation     = "23505"
	codeForeignKeyViolation = "23503"
)

// Store is the PostgreSQL implementation of store.Store.
type Store struct {
	pool   *pgxpool.Pool
	cipher *store.Cipher
}

var _ store.Store = (*Store)(nil)

// Open connects to the database named by dsn, a postgres:// or
// postgresql:// URL (pgx's parameters apply: sslmode, pool_max_conns, …),
// with the 32-byte encryption key, and runs the migrations.
func Open(ctx context.Context, dsn string, key []byte) (store.Store, error) {
	return Connect(ctx, dsn, key)
}

// idlePing is how long a pooled connection may sit idle before it is pinged
// on its way out of the pool.
const idlePing = 100 * time.Millisecond

// Connect is Open returning the concrete type. Errors never hold the DSN's
// password.
func Connect(ctx context.Context, dsn string, key []byte) (*Store, error) {
	c, err := store.NewCipher(key)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts passwords in parse errors only on a best-effort basis
		// (and a wrapped net/url error quotes the URL): say nothing of the DSN.
		return nil, errors.New("postgres: store.dsn is not a valid PostgreSQL URL (not shown: it may hold a password)")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = ConnectTimeout
	}
	if _, set := cfg.ConnConfig.RuntimeParams["application_name"]; !set {
		cfg.ConnConfig.RuntimeParams["application_name"] = "traverse"
	}
	// A connection PostgreSQL closed while it sat in the pool (a restart, a
	// failover) fails the first query on it. pgx pings one idle for over a
	// second before handing it out; a tenth of one still costs a busy pool
	// nothing (its connections are never idle that long) and shrinks the
	// window after a restart in which a request gets a 500.
	cfg.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool { return p.IdleDuration > idlePing }
	password := cfg.ConnConfig.Password
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, redact(fmt.Errorf("postgres: %w", err), password)
	}
	s := &Store{pool: pool, cipher: c}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, redact(err, password)
	}
	return s, nil
}

// redact replaces the password wherever it appears in err's text. pgx's
// connect errors name host, user and database only; this is a second guard.
func redact(err error, password string) error {
	if password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), password, "xxxxx"))
}

// Close closes every connection of the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// CreateAccount implements store.Store.
func (s *Store) CreateAccount(ctx context.Context, a store.Account) error {
	_, err := s.insertAccount(ctx, a, false)
	return err
}

// CreateFirstAccount implements store.Store: under the exclusive accounts
// lock, the insert's snapshot (taken after the lock) sees any account another
// node committed, so of several nodes starting at once exactly one creates.
func (s *Store) CreateFirstAccount(ctx context.Context, a store.Account) (bool, error) {
	return s.insertAccount(ctx, a, true)
}

func (s *Store) insertAccount(ctx context.Context, a store.Account, onlyIfEmpty bool) (bool, error) {
	tok, err := s.cipher.Seal(a.AuthToken, store.AuthTokenAD(a.Sid))
	if err != nil {
		return false, err
	}
	lock := `SELECT pg_advisory_xact_lock_shared($1)`
	q := `INSERT INTO accounts (sid, friendly_name, auth_token, status, parent_sid, date_created, date_updated)
		SELECT $1, $2, $3, $4, $5, $6, $7`
	if onlyIfEmpty {
		lock = `SELECT pg_advisory_xact_lock($1)`
		q += ` WHERE NOT EXISTS (SELECT 1 FROM accounts)`
	}
	var created bool
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lock, accountsLock); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, q, a.Sid, a.FriendlyName, tok, string(a.Status),
			nullable(a.ParentSid), a.DateCreated.UTC(), a.DateUpdated.UTC())
		created = tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, mapErr(err)
	}
	return created, nil
}

const accountCols = `sid, friendly_name, auth_token, status, COALESCE(parent_sid, ''), date_created, date_updated`

// GetAccount implements store.Store.
func (s *Store) GetAccount(ctx context.Context, sid string) (store.Account, error) {
	return s.scanAccount(s.pool.QueryRow(ctx, `SELECT `+accountCols+` FROM accounts WHERE sid = $1`, sid))
}

// ListAccounts implements store.Store.
func (s *Store) ListAccounts(ctx context.Context) ([]store.Account, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+accountCols+` FROM accounts ORDER BY date_created, sid`)
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
	tag, err := s.pool.Exec(ctx,
		`UPDATE accounts SET friendly_name = $1, auth_token = $2, status = $3, date_updated = $4 WHERE sid = $5`,
		a.FriendlyName, tok, string(a.Status), a.DateUpdated.UTC(), a.Sid)
	if err != nil {
		return mapErr(err)
	}
	return oneRow(tag)
}

func (s *Store) scanAccount(r pgx.Row) (store.Account, error) {
	var (
		a        store.Account
		tok      []byte
		status   string
		cre, upd time.Time
	)
	if err := r.Scan(&a.Sid, &a.FriendlyName, &tok, &status, &a.ParentSid, &cre, &upd); err != nil {
		return store.Account{}, mapErr(err)
	}
	var err error
	if a.AuthToken, err = s.cipher.Open(tok, store.AuthTokenAD(a.Sid)); err != nil {
		return store.Account{}, fmt.Errorf("postgres: auth token of %s: %w", a.Sid, store.ErrWrongKey)
	}
	a.Status = store.Status(status)
	a.DateCreated, a.DateUpdated = cre.UTC(), upd.UTC()
	return a, nil
}

// CreateKey implements store.Store.
func (s *Store) CreateKey(ctx context.Context, k store.Key) error {
	sec, err := s.cipher.Seal(k.Secret, store.KeySecretAD(k.Sid))
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx,
		`INSERT INTO api_keys (sid, account_sid, friendly_name, secret, date_created, date_updated) VALUES ($1, $2, $3, $4, $5, $6)`,
		k.Sid, k.AccountSid, k.FriendlyName, sec, k.DateCreated.UTC(), k.DateUpdated.UTC())
	return mapErr(err)
}

const keyCols = `sid, account_sid, friendly_name, secret, date_created, date_updated`

// GetKey implements store.Store.
func (s *Store) GetKey(ctx context.Context, sid string) (store.Key, error) {
	return s.scanKey(s.pool.QueryRow(ctx, `SELECT `+keyCols+` FROM api_keys WHERE sid = $1`, sid))
}

// ListKeys implements store.Store.
func (s *Store) ListKeys(ctx context.Context, accountSid string) ([]store.Key, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+keyCols+` FROM api_keys WHERE account_sid = $1 ORDER BY date_created, sid`, accountSid)
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
	tag, err := s.pool.Exec(ctx, `DELETE FROM api_keys WHERE sid = $1 AND account_sid = $2`, sid, accountSid)
	if err != nil {
		return mapErr(err)
	}
	return oneRow(tag)
}

func (s *Store) scanKey(r pgx.Row) (store.Key, error) {
	var (
		k        store.Key
		sec      []byte
		cre, upd time.Time
	)
	if err := r.Scan(&k.Sid, &k.AccountSid, &k.FriendlyName, &sec, &cre, &upd); err != nil {
		return store.Key{}, mapErr(err)
	}
	var err error
	if k.Secret, err = s.cipher.Open(sec, store.KeySecretAD(k.Sid)); err != nil {
		return store.Key{}, fmt.Errorf("postgres: secret of %s: %w", k.Sid, store.ErrWrongKey)
	}
	k.DateCreated, k.DateUpdated = cre.UTC(), upd.UTC()
	return k, nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func oneRow(tag pgconn.CommandTag) error {
	if tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	return nil
}

// mapErr turns database errors into the store's sentinels: no row and a
// foreign-key violation (a parent or account that does not exist) are
// ErrNotFound, a unique violation is ErrExists.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case codeUniqueViolation:
			return fmt.Errorf("%w: %s", store.ErrExists, pe.ConstraintName)
		case codeForeignKeyViolation:
			return fmt.Errorf("%w: %s", store.ErrNotFound, pe.ConstraintName)
		}
	}
	return fmt.Errorf("postgres: %w", err)
}
