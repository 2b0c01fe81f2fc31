package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migrations are applied in order; migration i has version i+1. Append only:
// never edit one that has shipped.
var migrations = []string{
	// 1: accounts, API keys and the key-check marker. Secrets are sealed
	// BLOBs (store.Cipher); times are Unix nanoseconds, UTC.
	`CREATE TABLE accounts (
		sid           TEXT PRIMARY KEY,
		friendly_name TEXT NOT NULL,
		auth_token    BLOB NOT NULL,
		status        TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
		parent_sid    TEXT REFERENCES accounts (sid),
		date_created  INTEGER NOT NULL,
		date_updated  INTEGER NOT NULL
	);
	CREATE INDEX accounts_parent ON accounts (parent_sid);
	CREATE TABLE api_keys (
		sid           TEXT PRIMARY KEY,
		account_sid   TEXT NOT NULL REFERENCES accounts (sid) ON DELETE CASCADE,
		friendly_name TEXT NOT NULL,
		secret        BLOB NOT NULL,
		date_created  INTEGER NOT NULL,
		date_updated  INTEGER NOT NULL
	);
	CREATE INDEX api_keys_account ON api_keys (account_sid, date_created);
	CREATE TABLE store_meta (
		name  TEXT PRIMARY KEY,
		value BLOB NOT NULL
	);`,
	// 2 (issue 12): the fleet registry, and the version that every state
	// change bumps. uris and secret_fps are JSON arrays of strings.
	`CREATE TABLE nodes (
		id             TEXT PRIMARY KEY,
		public_host    TEXT NOT NULL,
		uris           TEXT NOT NULL,
		region         TEXT NOT NULL,
		weight         INTEGER NOT NULL,
		allocations    INTEGER NOT NULL,
		bits_per_sec   INTEGER NOT NULL,
		secret_fps     TEXT NOT NULL,
		state          TEXT NOT NULL CHECK (state IN ('serving', 'draining')),
		started        INTEGER NOT NULL,
		last_heartbeat INTEGER NOT NULL
	);
	CREATE TABLE fleet_version (
		id      INTEGER PRIMARY KEY CHECK (id = 1),
		version INTEGER NOT NULL
	);
	INSERT INTO fleet_version (id, version) VALUES (1, 0);`,
	// 3 (issue 11): usage buckets, revocations and published live allocations
	// (usage.go). Hours and times are Unix seconds and nanoseconds, UTC.
	`CREATE TABLE usage_hourly (
		account_sid      TEXT NOT NULL,
		region           TEXT NOT NULL,
		hour             INTEGER NOT NULL,
		bytes_sent       INTEGER NOT NULL,
		bytes_received   INTEGER NOT NULL,
		packets_sent     INTEGER NOT NULL,
		packets_received INTEGER NOT NULL,
		PRIMARY KEY (account_sid, hour, region)
	);
	CREATE TABLE revocations (
		kind    TEXT NOT NULL,
		value   TEXT NOT NULL,
		expires INTEGER NOT NULL,
		PRIMARY KEY (kind, value)
	);
	CREATE TABLE live_allocations (
		id             TEXT PRIMARY KEY,
		node           TEXT NOT NULL,
		account_sid    TEXT NOT NULL,
		username       TEXT NOT NULL,
		client         TEXT NOT NULL,
		transport      TEXT NOT NULL,
		relay          TEXT NOT NULL,
		created        INTEGER NOT NULL,
		expires        INTEGER NOT NULL,
		permissions    INTEGER NOT NULL,
		channels       INTEGER NOT NULL,
		bytes_sent     INTEGER NOT NULL,
		bytes_received INTEGER NOT NULL,
		seen           INTEGER NOT NULL
	);
	CREATE INDEX live_allocations_account ON live_allocations (account_sid);
	CREATE INDEX live_allocations_node ON live_allocations (node);`,
}

// SchemaVersion is the schema version this build migrates to.
var SchemaVersion = len(migrations)

// migrate applies every migration not yet recorded in schema_migrations, each
// in its own write transaction, so it is idempotent and safe when several
// processes start on the same file at once.
func (s *Store) migrate(ctx context.Context) error {
	if err := s.createMigrationsTable(ctx); err != nil {
		return fmt.Errorf("sqlite: create schema_migrations: %w", err)
	}
	for i, m := range migrations {
		if err := s.apply(ctx, i+1, m); err != nil {
			return fmt.Errorf("sqlite: migration %d: %w", i+1, err)
		}
	}
	var newest int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&newest); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if newest > SchemaVersion {
		return fmt.Errorf("sqlite: database schema version %d is newer than this build's %d; upgrade traverse", newest, SchemaVersion)
	}
	return nil
}

// createMigrationsTable creates schema_migrations inside a write transaction.
// On its own, CREATE TABLE IF NOT EXISTS reads the schema first and then asks
// for the write lock; when another process created the table in between,
// SQLite refuses that upgrade at once with SQLITE_BUSY, without waiting out
// the busy timeout. BEGIN IMMEDIATE takes the write lock first, so a second
// process waits its turn and then finds the table.
func (s *Store) createMigrationsTable(ctx context.Context) error {
	return s.inWriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at INTEGER NOT NULL
		)`)
		return err
	})
}

func (s *Store) apply(ctx context.Context, version int, stmt string) error {
	return s.inWriteTx(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM schema_migrations WHERE version = ?`, version).Scan(&one)
		if err == nil {
			return nil // already applied
		}
		if err != sql.ErrNoRows {
			return err
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
			version, time.Now().UnixNano())
		return err
	})
}

// inWriteTx runs f in a transaction that holds the write lock from its
// start (BEGIN IMMEDIATE, see _txlock) and commits it when f succeeds.
func (s *Store) inWriteTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}
