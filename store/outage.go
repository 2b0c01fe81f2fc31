package store

import (
	"context"
	"errors"
	"sync"
	"time"
)

// OutageLookupTimeout bounds each lookup made through WithOutageGrace, so a
// database that does not answer (a partition, not a refusal) falls back
// within seconds rather than after the driver's connect timeout.
const OutageLookupTimeout = 2 * time.Second

// WithOutageGrace returns st with one change: when GetAccount or GetKey
// fails for any reason but ErrNotFound or ErrWrongKey (the database cannot
// be reached), it answers with the same row as last read successfully, if
// that read is younger than grace. A row the database says is gone is
// forgotten at once, so only changes made while this process did not look
// (at most grace before an outage) can be missed. stale, when not nil, is
// called each time a remembered row is served. grace <= 0 returns st.
func WithOutageGrace(st Store, grace time.Duration, now func() time.Time, stale func()) Store {
	if grace <= 0 {
		return st
	}
	if now == nil {
		now = time.Now
	}
	if stale == nil {
		stale = func() {}
	}
	return &outageGrace{Store: st, grace: grace, now: now, stale: stale,
		accounts: map[string]remembered[Account]{}, keys: map[string]remembered[Key]{}}
}

type remembered[T any] struct {
	v  T
	at time.Time
}

type outageGrace struct {
	Store
	grace time.Duration
	now   func() time.Time
	stale func()

	mu       sync.Mutex
	accounts map[string]remembered[Account]
	keys     map[string]remembered[Key]
}

// GetAccount implements Store.
func (o *outageGrace) GetAccount(ctx context.Context, sid string) (Account, error) {
	ctx, cancel := context.WithTimeout(ctx, OutageLookupTimeout)
	defer cancel()
	a, err := o.Store.GetAccount(ctx, sid)
	return lookup(o, o.accounts, sid, a, err)
}

// GetKey implements Store.
func (o *outageGrace) GetKey(ctx context.Context, sid string) (Key, error) {
	ctx, cancel := context.WithTimeout(ctx, OutageLookupTimeout)
	defer cancel()
	k, err := o.Store.GetKey(ctx, sid)
	return lookup(o, o.keys, sid, k, err)
}

// maxRemembered bounds each map; past it, expired rows are dropped.
const maxRemembered = 100_000

// lookup records a successful read, forgets a row the database denies, and
// during an outage serves a remembered row younger than grace.
func lookup[T any](o *outageGrace, m map[string]remembered[T], sid string, v T, err error) (T, error) {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case err == nil:
		if len(m) >= maxRemembered {
			for k, r := range m {
				if now.Sub(r.at) > o.grace {
					delete(m, k)
				}
			}
		}
		if len(m) < maxRemembered {
			m[sid] = remembered[T]{v, now}
		}
		return v, nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrWrongKey):
		delete(m, sid)
		return v, err
	}
	if r, ok := m[sid]; ok && now.Sub(r.at) <= o.grace {
		o.stale()
		return r.v, nil
	}
	return v, err
}
