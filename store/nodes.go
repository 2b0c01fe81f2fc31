package store

import (
	"context"
	"time"
)

// NodeState is a fleet node's state as recorded in the store. Whether a node
// is down is not recorded: readers derive it from LastHeartbeat.
type NodeState string

// Node states. A draining node keeps its live allocations but is handed out
// by no issuer.
const (
	NodeServing  NodeState = "serving"
	NodeDraining NodeState = "draining"
)

// Valid reports whether s is a known node state.
func (s NodeState) Valid() bool { return s == NodeServing || s == NodeDraining }

// Node is one relay of a fleet: who it is, where clients reach it, and its
// load at its last heartbeat.
type Node struct {
	// ID is stable across restarts (kept in the node's data_dir).
	ID string
	// PublicHost is the host in the node's URIs.
	PublicHost string
	// URIs are the node's STUN/TURN URIs without credentials.
	URIs []string
	// Region is free text (node.region); may be empty.
	Region string
	// Weight is the node's share of new credentials, at least 1.
	Weight int
	// Allocations is the live allocation count at the last heartbeat.
	Allocations int
	// BitsPerSecond is relayed payload over the last minute.
	BitsPerSecond int64
	// SecretFingerprints identify the TURN REST secrets the node verifies
	// (keyed hashes, never the secrets); the first is the one it mints with.
	SecretFingerprints []string
	// State is serving or draining.
	State NodeState
	// Started is when the node registered; LastHeartbeat its latest beat.
	// Both UTC, from the node's clock.
	Started       time.Time
	LastHeartbeat time.Time
}

// NodeStore is the fleet registry. State changes (SaveNode, SetNodeState)
// bump a fleet version in the same transaction, so a reader that checks
// NodesVersion before using a cached list sees a drain as soon as it commits;
// heartbeats do not bump it.
type NodeStore interface {
	// SaveNode inserts or replaces the whole row of n.ID (registration).
	SaveNode(ctx context.Context, n Node) error
	// BeatNode updates everything of n.ID but its State and Started, and
	// returns the stored State; ErrNotFound when the row is gone.
	BeatNode(ctx context.Context, n Node) (NodeState, error)
	// SetNodeState sets the state of node id, or returns ErrNotFound.
	SetNodeState(ctx context.Context, id string, state NodeState) error
	// ListNodes returns every registered node, by ID.
	ListNodes(ctx context.Context) ([]Node, error)
	// NodesVersion is the fleet version: it changes whenever a node is
	// saved or changes state.
	NodesVersion(ctx context.Context) (int64, error)
}
