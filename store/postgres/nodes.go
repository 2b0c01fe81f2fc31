package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/traverse/traverse/store"
)

const nodeCols = `id, public_host, uris, region, weight, allocations, bits_per_sec, secret_fps, state, started, last_heartbeat`

// SaveNode implements store.NodeStore.
func (s *Store) SaveNode(ctx context.Context, n store.Node) error {
	return s.bumping(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO nodes (`+nodeCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (id) DO UPDATE SET public_host = $2, uris = $3, region = $4, weight = $5,
				allocations = $6, bits_per_sec = $7, secret_fps = $8, state = $9, started = $10, last_heartbeat = $11`,
			n.ID, n.PublicHost, store.EncodeList(n.URIs), n.Region, n.Weight, n.Allocations, n.BitsPerSecond,
			store.EncodeList(n.SecretFingerprints), string(n.State), n.Started.UTC(), n.LastHeartbeat.UTC())
		return err
	})
}

// BeatNode implements store.NodeStore.
func (s *Store) BeatNode(ctx context.Context, n store.Node) (store.NodeState, error) {
	var state string
	err := s.pool.QueryRow(ctx, `UPDATE nodes SET public_host = $1, uris = $2, region = $3, weight = $4,
		allocations = $5, bits_per_sec = $6, secret_fps = $7, last_heartbeat = $8 WHERE id = $9 RETURNING state`,
		n.PublicHost, store.EncodeList(n.URIs), n.Region, n.Weight, n.Allocations, n.BitsPerSecond,
		store.EncodeList(n.SecretFingerprints), n.LastHeartbeat.UTC(), n.ID).Scan(&state)
	if err != nil {
		return "", mapErr(err)
	}
	return store.NodeState(state), nil
}

// SetNodeState implements store.NodeStore.
func (s *Store) SetNodeState(ctx context.Context, id string, state store.NodeState) error {
	return s.bumping(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE nodes SET state = $1 WHERE id = $2`, string(state), id)
		if err != nil {
			return err
		}
		return oneRow(tag)
	})
}

// bumping runs fn and bumps the fleet version in one transaction, so a
// reader that sees the new version sees fn's change.
func (s *Store) bumping(ctx context.Context, fn func(pgx.Tx) error) error {
	return mapErr(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE fleet_version SET version = version + 1 WHERE id = 1`)
		return err
	}))
}

// ListNodes implements store.NodeStore.
func (s *Store) ListNodes(ctx context.Context) ([]store.Node, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+nodeCols+` FROM nodes ORDER BY id`)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []store.Node
	for rows.Next() {
		var (
			n             store.Node
			uris, fps, st string
			started, last time.Time
		)
		if err := rows.Scan(&n.ID, &n.PublicHost, &uris, &n.Region, &n.Weight, &n.Allocations,
			&n.BitsPerSecond, &fps, &st, &started, &last); err != nil {
			return nil, mapErr(err)
		}
		if err := store.DecodeNodeLists(&n, uris, fps); err != nil {
			return nil, err
		}
		n.State, n.Started, n.LastHeartbeat = store.NodeState(st), started.UTC(), last.UTC()
		out = append(out, n)
	}
	return out, mapErr(rows.Err())
}

// NodesVersion implements store.NodeStore.
func (s *Store) NodesVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT version FROM fleet_version WHERE id = 1`).Scan(&v)
	return v, mapErr(err)
}
