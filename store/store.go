// Package store keeps traverse's accounts and API keys. Store is the interface
// the issuer uses; store/sqlite is the embedded default behind it and
// store/postgres lets several nodes share one database. Secrets that
// must stay recoverable (account auth tokens and API-key secrets, which sign
// and verify HMAC tokens) are encrypted at rest with AES-256-GCM under a key
// kept outside the database (see LoadOrCreateKey and Cipher).
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors every implementation returns (possibly wrapped).
var (
	// ErrNotFound means no account or key has that SID (for the account given).
	ErrNotFound = errors.New("store: not found")
	// ErrExists means a record with that SID already exists.
	ErrExists = errors.New("store: already exists")
	// ErrWrongKey means the encryption key does not open this database's secrets.
	ErrWrongKey = errors.New("store: encryption key does not match the database")
	// ErrUnsupported means the DSN names a backend that is not available.
	ErrUnsupported = errors.New("store: unsupported DSN")
)

// Status is an account's state.
type Status string

// Account states. A suspended account authenticates nothing, neither with its
// auth token nor with its API keys.
const (
	StatusActive    Status = "active"
	StatusSuspended Status = "suspended"
)

// Valid reports whether s is a known status.
func (s Status) Valid() bool { return s == StatusActive || s == StatusSuspended }

// Account is a tenant: it authenticates with its SID and auth token, owns API
// keys and may own subaccounts.
type Account struct {
	// Sid is "AC" followed by 32 lowercase hex digits.
	Sid string
	// FriendlyName is a free-form label.
	FriendlyName string
	// AuthToken is the account's secret, in clear text in memory only.
	AuthToken string
	// Status is active or suspended.
	Status Status
	// ParentSid is the owning account of a subaccount; empty for a top-level account.
	ParentSid string
	// DateCreated and DateUpdated are kept in UTC.
	DateCreated time.Time
	DateUpdated time.Time
}

// Key is an API key of an account: it authenticates as KeySid:Secret.
type Key struct {
	// Sid is "SK" followed by 32 lowercase hex digits.
	Sid string
	// AccountSid is the account the key acts for.
	AccountSid string
	// FriendlyName is a free-form label.
	FriendlyName string
	// Secret is the key's secret, in clear text in memory only.
	Secret string
	// DateCreated and DateUpdated are kept in UTC.
	DateCreated time.Time
	DateUpdated time.Time
}

// Store holds accounts and API keys. Implementations are safe for concurrent
// use, and a change made through one Store (on any node or process sharing
// the database) is seen by every later call on every other: nothing is
// cached on a timer. An implementation may keep rows only behind a check
// made on every call that tells exactly whether the database changed since
// (store/sqlite does, with PRAGMA data_version).
type Store interface {
	// CreateAccount inserts a; ErrExists when its SID is taken, ErrNotFound
	// when its ParentSid names no account.
	CreateAccount(ctx context.Context, a Account) error
	// CreateFirstAccount inserts a only when the store holds no account at
	// all, atomically, and reports whether it did.
	CreateFirstAccount(ctx context.Context, a Account) (bool, error)
	// GetAccount returns the account with that SID, or ErrNotFound.
	GetAccount(ctx context.Context, sid string) (Account, error)
	// ListAccounts returns every account, oldest first.
	ListAccounts(ctx context.Context) ([]Account, error)
	// UpdateAccount replaces FriendlyName, AuthToken, Status and DateUpdated
	// of the account with a's SID, or returns ErrNotFound.
	UpdateAccount(ctx context.Context, a Account) error

	// CreateKey inserts k; ErrExists when its SID is taken, ErrNotFound when
	// its account does not exist.
	CreateKey(ctx context.Context, k Key) error
	// GetKey returns the key with that SID, whatever its account, or ErrNotFound.
	GetKey(ctx context.Context, sid string) (Key, error)
	// ListKeys returns the keys of an account, oldest first.
	ListKeys(ctx context.Context, accountSid string) ([]Key, error)
	// DeleteKey removes the key sid of accountSid, or returns ErrNotFound.
	DeleteKey(ctx context.Context, accountSid, sid string) error

	// NodeStore is the fleet registry (nodes.go).
	NodeStore
	// Usage keeps usage buckets, revocations and live allocations (usage.go).
	Usage

	// Close releases the store.
	Close() error
}
