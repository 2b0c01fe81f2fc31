package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/traverse/traverse/store"
)

// Advisory lock keys (pg_advisory_xact_lock; they are per database). The
// value spells "traverse" in ASCII.
const (
	// migrateLock serialises migrations and the key check of nodes starting at once.
	migrateLock int64 = 0x7472617665727365
	// accountsLock is taken exclusively by CreateFirstAccount and shared by
	// CreateAccount, so "the store holds no account" stays true until the
	// first account commits.
	accountsLock int64 = 0x7472617665727366
)

// migrations are applied in order; migration i has version i+1. Append only:
// never edit one that has shipped.
var migrations = []string{
	// 1: accounts, API keys and the key-check marker. Secrets are sealed
	// bytea (store.Cipher), bound to the same associated data as in the
	// SQLite store; times are timestamptz (microseconds).
	`CREATE TABLE accounts (
		sid           text PRIMARY KEY,
		friendly_name text NOT NULL,
		auth_token    bytea NOT NULL,
		status        text NOT NULL CHECK (status IN ('active', 'suspended')),
		parent_sid    text REFERENCES accounts (sid),
		date_created  timestamptz NOT NULL,
		date_updated  timestamptz NOT NULL
	);
	CREATE INDEX accounts_parent ON accounts (parent_sid);
	CREATE INDEX accounts_created ON accounts (date_created, sid);
	CREATE TABLE api_keys (
		sid           text PRIMARY KEY,
		account_sid   text NOT NULL REFERENCES accounts (sid) ON DELETE CASCADE,
		friendly_name text NOT NULL,
		secret        bytea NOT NULL,
		date_created  timestamptz NOT NULL,
		date_updated  timestamptz NOT NULL
	);
	CREATE INDEX api_keys_account ON api_keys (account_sid, date_created, sid);
	CREATE TABLE store_meta (
		name  text PRIMARY KEY,
		value bytea NOT NULL
	);`,
	// 2 (issue 12): the fleet registry, and the version that every state
	// change bumps. uris and secret_fps are JSON arrays of strings.
	`CREATE TABLE nodes (
		id             text PRIMARY KEY,
		public_host    text NOT NULL,
		uris           text NOT NULL,
		region         text NOT NULL,
		weight         integer NOT NULL,
		allocations    integer NOT NULL,
		bits_per_sec   bigint NOT NULL,
		secret_fps     text NOT NULL,
		state          text NOT NULL CHECK (state IN ('serving', 'draining')),
		started        timestamptz NOT NULL,
		last_heartbeat timestamptz NOT NULL
	);
	CREATE TABLE fleet_version (
		id      integer PRIMARY KEY CHECK (id = 1),
		version bigint NOT NULL
	);
	INSERT INTO fleet_version (id, version) VALUES (1, 0);`,
	// 3 (issue 11): usage buckets, revocations and published live allocations
	// (usage.go). Adding a revocation also NOTIFYs revocationChannel.
	`CREATE TABLE usage_hourly (
		account_sid      text NOT NULL,
		region           text NOT NULL,
		hour             timestamptz NOT NULL,
		bytes_sent       bigint NOT NULL,
		bytes_received   bigint NOT NULL,
		packets_sent     bigint NOT NULL,
		packets_received bigint NOT NULL,
		PRIMARY KEY (account_sid, hour, region)
	);
	CREATE TABLE revocations (
		kind    text NOT NULL,
		value   text NOT NULL,
		expires timestamptz NOT NULL,
		PRIMARY KEY (kind, value)
	);
	CREATE TABLE live_allocations (
		id             text PRIMARY KEY,
		node           text NOT NULL,
		account_sid    text NOT NULL,
		username       text NOT NULL,
		client         text NOT NULL,
		transport      text NOT NULL,
		relay          text NOT NULL,
		created        timestamptz NOT NULL,
		expires        timestamptz,
		permissions    integer NOT NULL,
		channels       integer NOT NULL,
		bytes_sent     bigint NOT NULL,
		bytes_received bigint NOT NULL,
		seen           timestamptz NOT NULL
	);
	CREATE INDEX live_allocations_account ON live_allocations (account_sid);
	CREATE INDEX live_allocations_node ON live_allocations (node);`,
}

// SchemaVersion is the schema version this build migrates to.
var SchemaVersion = len(migrations)

// migrate applies every migration not yet recorded in schema_migrations and
// checks the encryption key, all in one transaction holding migrateLock: of
// several nodes starting at once on one database, one migrates and the others
// wait, then find nothing left to do. PostgreSQL's DDL is transactional, so a
// failed migration leaves the schema as it was.
func (s *Store) migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
			return fmt.Errorf("lock for migrations: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		done := map[int]bool{}
		for _, v := range applied {
			if int(v) > SchemaVersion {
				return fmt.Errorf("database schema version %d is newer than this build's %d; upgrade traverse", v, SchemaVersion)
			}
			done[int(v)] = true
		}
		for i, m := range migrations {
			if done[i+1] {
				continue
			}
			if _, err := tx.Exec(ctx, m); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, i+1); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		return s.checkKey(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// checkKey stores a sealed marker on first start and later refuses a key that
// does not open it, so a wrong store.encryption_key fails at start-up rather
// than at the first authentication.
func (s *Store) checkKey(ctx context.Context, tx pgx.Tx) error {
	v, err := s.cipher.Seal(store.KeyCheckPlaintext, store.KeyCheckAD)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx,
		`INSERT INTO store_meta (name, value) VALUES ('key_check', $1) ON CONFLICT (name) DO NOTHING`, v); err != nil {
		return fmt.Errorf("key check: %w", err)
	}
	var sealed []byte
	if err := tx.QueryRow(ctx, `SELECT value FROM store_meta WHERE name = 'key_check'`).Scan(&sealed); err != nil {
		return fmt.Errorf("key check: %w", err)
	}
	if _, err := s.cipher.Open(sealed, store.KeyCheckAD); err != nil {
		return store.ErrWrongKey
	}
	return nil
}
