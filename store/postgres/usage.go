package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/traverse/traverse/store"
)

// revocationChannel is the LISTEN/NOTIFY channel AddRevocation signals.
const revocationChannel = "traverse_revocations"

// watchRetry is the pause before a lost LISTEN connection is remade.
const watchRetry = 500 * time.Millisecond

// AddUsage implements store.Usage, in one transaction.
func (s *Store) AddUsage(ctx context.Context, rows []store.UsageRow) error {
	if len(rows) == 0 {
		return nil
	}
	return mapErr(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, r := range rows {
			b.Queue(`INSERT INTO usage_hourly
				(account_sid, region, hour, bytes_sent, bytes_received, packets_sent, packets_received)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (account_sid, hour, region) DO UPDATE SET
					bytes_sent = usage_hourly.bytes_sent + excluded.bytes_sent,
					bytes_received = usage_hourly.bytes_received + excluded.bytes_received,
					packets_sent = usage_hourly.packets_sent + excluded.packets_sent,
					packets_received = usage_hourly.packets_received + excluded.packets_received`,
				r.AccountSid, r.Region, r.Hour.UTC().Truncate(time.Hour),
				r.BytesSent, r.BytesReceived, r.PacketsSent, r.PacketsReceived)
		}
		return tx.SendBatch(ctx, b).Close()
	}))
}

// ListUsage implements store.Usage.
func (s *Store) ListUsage(ctx context.Context, accountSids []string, from, to time.Time) ([]store.UsageRow, error) {
	if len(accountSids) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT account_sid, region, hour, bytes_sent, bytes_received, packets_sent, packets_received
		FROM usage_hourly WHERE hour >= $1 AND hour < $2 AND account_sid = ANY($3)
		ORDER BY account_sid, hour, region`, from.UTC(), to.UTC(), accountSids)
	if err != nil {
		return nil, mapErr(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.UsageRow, error) {
		var u store.UsageRow
		err := r.Scan(&u.AccountSid, &u.Region, &u.Hour, &u.BytesSent, &u.BytesReceived, &u.PacketsSent, &u.PacketsReceived)
		u.Hour = u.Hour.UTC()
		return u, err
	})
	return out, mapErr(err)
}

// AddRevocation implements store.Usage: the row and the NOTIFY commit
// together, so a listener that hears it finds the row.
func (s *Store) AddRevocation(ctx context.Context, r store.Revocation) error {
	return mapErr(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO revocations (kind, value, expires) VALUES ($1, $2, $3)
			ON CONFLICT (kind, value) DO UPDATE SET expires = GREATEST(revocations.expires, excluded.expires)`,
			r.Kind, r.Value, r.Expires.UTC()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, revocationChannel, r.Kind)
		return err
	}))
}

// DeleteRevocation implements store.Usage.
func (s *Store) DeleteRevocation(ctx context.Context, kind, value string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM revocations WHERE kind = $1 AND value = $2`, kind, value)
	return mapErr(err)
}

// ListRevocations implements store.Usage.
func (s *Store) ListRevocations(ctx context.Context, now time.Time) ([]store.Revocation, error) {
	if _, err := s.pool.Exec(ctx, `DELETE FROM revocations WHERE expires <= $1`, now.UTC()); err != nil {
		return nil, mapErr(err)
	}
	rows, err := s.pool.Query(ctx, `SELECT kind, value, expires FROM revocations ORDER BY kind, value`)
	if err != nil {
		return nil, mapErr(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Revocation, error) {
		var v store.Revocation
		err := r.Scan(&v.Kind, &v.Value, &v.Expires)
		v.Expires = v.Expires.UTC()
		return v, err
	})
	return out, mapErr(err)
}

// WatchRevocations implements store.Usage with LISTEN on a connection of
// its own. When the connection is lost (the server restarts) it is remade
// after watchRetry, and changed is called again, since a NOTIFY sent
// meanwhile is lost.
func (s *Store) WatchRevocations(ctx context.Context, changed func()) {
	for ctx.Err() == nil {
		s.listen(ctx, changed)
		select {
		case <-ctx.Done():
		case <-time.After(watchRetry):
		}
	}
}

func (s *Store) listen(ctx context.Context, changed func()) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return
	}
	// LISTEN state must not go back to the pool.
	conn := c.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+revocationChannel); err != nil {
		return
	}
	changed()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return
		}
		changed()
	}
}

// PutLiveAllocations implements store.Usage.
func (s *Store) PutLiveAllocations(ctx context.Context, node string, allocs []store.LiveAllocation, now time.Time) error {
	return mapErr(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`DELETE FROM live_allocations WHERE node = $1`, node)
		for _, a := range allocs {
			var exp *time.Time
			if !a.Expires.IsZero() {
				e := a.Expires.UTC()
				exp = &e
			}
			b.Queue(`INSERT INTO live_allocations
				(id, node, account_sid, username, client, transport, relay, created, expires, permissions, channels, bytes_sent, bytes_received, seen)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
				ON CONFLICT (id) DO UPDATE SET node = excluded.node, seen = excluded.seen,
					permissions = excluded.permissions, channels = excluded.channels,
					bytes_sent = excluded.bytes_sent, bytes_received = excluded.bytes_received`,
				a.ID, node, a.AccountSid, a.Username, a.Client, a.Transport, a.Relay, a.Created.UTC(), exp,
				a.Permissions, a.Channels, a.BytesSent, a.BytesReceived, now.UTC())
		}
		return tx.SendBatch(ctx, b).Close()
	}))
}

// ListLiveAllocations implements store.Usage.
func (s *Store) ListLiveAllocations(ctx context.Context, accountSids []string, seenAfter time.Time) ([]store.LiveAllocation, error) {
	if len(accountSids) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT id, node, account_sid, username, client, transport, relay, created, expires,
		permissions, channels, bytes_sent, bytes_received FROM live_allocations
		WHERE seen > $1 AND account_sid = ANY($2) ORDER BY created DESC, id`, seenAfter.UTC(), accountSids)
	if err != nil {
		return nil, mapErr(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.LiveAllocation, error) {
		var a store.LiveAllocation
		var exp *time.Time
		err := r.Scan(&a.ID, &a.Node, &a.AccountSid, &a.Username, &a.Client, &a.Transport, &a.Relay, &a.Created, &exp,
			&a.Permissions, &a.Channels, &a.BytesSent, &a.BytesReceived)
		a.Created = a.Created.UTC()
		if exp != nil {
			a.Expires = exp.UTC()
		}
		return a, err
	})
	return out, mapErr(err)
}
