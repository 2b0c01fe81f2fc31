package sqlite

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/traverse/traverse/store"
)

// AddUsage implements store.Usage.
func (s *Store) AddUsage(ctx context.Context, rows []store.UsageRow) error {
	if len(rows) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err)
	}
	defer tx.Rollback()
	for _, r := range rows {
		if _, err := tx.ExecContext(ctx, `INSERT INTO usage_hourly
			(account_sid, region, hour, bytes_sent, bytes_received, packets_sent, packets_received)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (account_sid, hour, region) DO UPDATE SET
				bytes_sent = bytes_sent + excluded.bytes_sent,
				bytes_received = bytes_received + excluded.bytes_received,
				packets_sent = packets_sent + excluded.packets_sent,
				packets_received = packets_received + excluded.packets_received`,
			r.AccountSid, r.Region, r.Hour.UTC().Truncate(time.Hour).Unix(),
			r.BytesSent, r.BytesReceived, r.PacketsSent, r.PacketsReceived); err != nil {
			return mapErr(err)
		}
	}
	return mapErr(tx.Commit())
}

// ListUsage implements store.Usage.
func (s *Store) ListUsage(ctx context.Context, accountSids []string, from, to time.Time) ([]store.UsageRow, error) {
	if len(accountSids) == 0 {
		return nil, nil
	}
	args := []any{from.Unix(), to.Unix()}
	for _, a := range accountSids {
		args = append(args, a)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT account_sid, region, hour, bytes_sent, bytes_received, packets_sent, packets_received
		FROM usage_hourly WHERE hour >= ? AND hour < ? AND account_sid IN (`+placeholders(len(accountSids))+`)
		ORDER BY account_sid, hour, region`, args...)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []store.UsageRow
	for rows.Next() {
		var r store.UsageRow
		var hour int64
		if err := rows.Scan(&r.AccountSid, &r.Region, &hour, &r.BytesSent, &r.BytesReceived, &r.PacketsSent, &r.PacketsReceived); err != nil {
			return nil, mapErr(err)
		}
		r.Hour = time.Unix(hour, 0).UTC()
		out = append(out, r)
	}
	return out, mapErr(rows.Err())
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// AddRevocation implements store.Usage. Watchers of this Store hear of it
// at once; other processes on the file find it at their next re-read.
func (s *Store) AddRevocation(ctx context.Context, r store.Revocation) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO revocations (kind, value, expires) VALUES (?, ?, ?)
		ON CONFLICT (kind, value) DO UPDATE SET expires = MAX(expires, excluded.expires)`,
		r.Kind, r.Value, r.Expires.UnixNano())
	if err != nil {
		return mapErr(err)
	}
	s.revWatchers.notify()
	return nil
}

// DeleteRevocation implements store.Usage.
func (s *Store) DeleteRevocation(ctx context.Context, kind, value string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM revocations WHERE kind = ? AND value = ?`, kind, value)
	return mapErr(err)
}

// ListRevocations implements store.Usage.
func (s *Store) ListRevocations(ctx context.Context, now time.Time) ([]store.Revocation, error) {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM revocations WHERE expires <= ?`, now.UnixNano()); err != nil {
		return nil, mapErr(err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT kind, value, expires FROM revocations ORDER BY kind, value`)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []store.Revocation
	for rows.Next() {
		var r store.Revocation
		var exp int64
		if err := rows.Scan(&r.Kind, &r.Value, &exp); err != nil {
			return nil, mapErr(err)
		}
		r.Expires = fromNanos(exp)
		out = append(out, r)
	}
	return out, mapErr(rows.Err())
}

// WatchRevocations implements store.Usage: SQLite serves one node, so the
// revocations added through this Store are all it hears of at once.
func (s *Store) WatchRevocations(ctx context.Context, changed func()) {
	ch := s.revWatchers.add()
	defer s.revWatchers.remove(ch)
	changed()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			changed()
		}
	}
}

// PutLiveAllocations implements store.Usage.
func (s *Store) PutLiveAllocations(ctx context.Context, node string, allocs []store.LiveAllocation, now time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM live_allocations WHERE node = ?`, node); err != nil {
		return mapErr(err)
	}
	for _, a := range allocs {
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO live_allocations
			(id, node, account_sid, username, client, transport, relay, created, expires, permissions, channels, bytes_sent, bytes_received, seen)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.ID, node, a.AccountSid, a.Username, a.Client, a.Transport, a.Relay, a.Created.UnixNano(), nanosOrZero(a.Expires),
			a.Permissions, a.Channels, a.BytesSent, a.BytesReceived, now.UnixNano()); err != nil {
			return mapErr(err)
		}
	}
	return mapErr(tx.Commit())
}

// ListLiveAllocations implements store.Usage.
func (s *Store) ListLiveAllocations(ctx context.Context, accountSids []string, seenAfter time.Time) ([]store.LiveAllocation, error) {
	if len(accountSids) == 0 {
		return nil, nil
	}
	args := []any{seenAfter.UnixNano()}
	for _, a := range accountSids {
		args = append(args, a)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, node, account_sid, username, client, transport, relay, created, expires,
		permissions, channels, bytes_sent, bytes_received FROM live_allocations
		WHERE seen > ? AND account_sid IN (`+placeholders(len(accountSids))+`) ORDER BY created DESC, id`, args...)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []store.LiveAllocation
	for rows.Next() {
		var a store.LiveAllocation
		var cre, exp int64
		if err := rows.Scan(&a.ID, &a.Node, &a.AccountSid, &a.Username, &a.Client, &a.Transport, &a.Relay, &cre, &exp,
			&a.Permissions, &a.Channels, &a.BytesSent, &a.BytesReceived); err != nil {
			return nil, mapErr(err)
		}
		a.Created = fromNanos(cre)
		if exp != 0 {
			a.Expires = fromNanos(exp)
		}
		out = append(out, a)
	}
	return out, mapErr(rows.Err())
}

func nanosOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// watchers wakes every WatchRevocations of one Store; a wake-up is never
// lost and never blocks the writer (each channel holds one).
type watchers struct {
	mu sync.Mutex
	m  map[chan struct{}]struct{}
}

func (w *watchers) add() chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.m == nil {
		w.m = map[chan struct{}]struct{}{}
	}
	w.m[ch] = struct{}{}
	w.mu.Unlock()
	return ch
}

func (w *watchers) remove(ch chan struct{}) {
	w.mu.Lock()
	delete(w.m, ch)
	w.mu.Unlock()
}

func (w *watchers) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.m {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
