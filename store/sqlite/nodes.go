package sqlite

import (
	"context"
	"database/sql"

	"github.com/traverse/traverse/store"
)

const nodeCols = `id, public_host, uris, region, weight, allocations, bits_per_sec, secret_fps, state, started, last_heartbeat`

// SaveNode implements store.NodeStore.
func (s *Store) SaveNode(ctx context.Context, n store.Node) error {
	return s.bumping(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO nodes (`+nodeCols+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			n.ID, n.PublicHost, store.EncodeList(n.URIs), n.Region, n.Weight, n.Allocations, n.BitsPerSecond,
			store.EncodeList(n.SecretFingerprints), string(n.State), n.Started.UnixNano(), n.LastHeartbeat.UnixNano())
		return err
	})
}

// BeatNode implements store.NodeStore.
func (s *Store) BeatNode(ctx context.Context, n store.Node) (store.NodeState, error) {
	var state string
	err := s.db.QueryRowContext(ctx, `UPDATE nodes SET public_host = ?, uris = ?, region = ?, weight = ?,
		allocations = ?, bits_per_sec = ?, secret_fps = ?, last_heartbeat = ? WHERE id = ? RETURNING state`,
		n.PublicHost, store.EncodeList(n.URIs), n.Region, n.Weight, n.Allocations, n.BitsPerSecond,
		store.EncodeList(n.SecretFingerprints), n.LastHeartbeat.UnixNano(), n.ID).Scan(&state)
	if err != nil {
		return "", mapErr(err)
	}
	return store.NodeState(state), nil
}

// SetNodeState implements store.NodeStore.
func (s *Store) SetNodeState(ctx context.Context, id string, state store.NodeState) error {
	return s.bumping(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE nodes SET state = ? WHERE id = ?`, string(state), id)
		if err != nil {
			return err
		}
		return oneRow(res)
	})
}

// bumping runs fn and bumps the fleet version in one transaction.
func (s *Store) bumping(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return mapErr(err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE fleet_version SET version = version + 1 WHERE id = 1`); err != nil {
		return mapErr(err)
	}
	return mapErr(tx.Commit())
}

// ListNodes implements store.NodeStore.
func (s *Store) ListNodes(ctx context.Context) ([]store.Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeCols+` FROM nodes ORDER BY id`)
	if err != nil {
		return nil, mapErr(err)
	}
	defer rows.Close()
	var out []store.Node
	for rows.Next() {
		var (
			n             store.Node
			uris, fps, st string
			started, last int64
		)
		if err := rows.Scan(&n.ID, &n.PublicHost, &uris, &n.Region, &n.Weight, &n.Allocations,
			&n.BitsPerSecond, &fps, &st, &started, &last); err != nil {
			return nil, mapErr(err)
		}
		if err := store.DecodeNodeLists(&n, uris, fps); err != nil {
			return nil, err
		}
		n.State, n.Started, n.LastHeartbeat = store.NodeState(st), fromNanos(started), fromNanos(last)
		out = append(out, n)
	}
	return out, mapErr(rows.Err())
}

// NodesVersion implements store.NodeStore.
func (s *Store) NodesVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, `SELECT version FROM fleet_version WHERE id = 1`).Scan(&v)
	return v, mapErr(err)
}
