package store

import (
	"context"
	"time"
)

// UsageRow is relayed traffic of one account in one hour. Written, it is a
// delta that AddUsage adds to the bucket; read back, it is the bucket's total
// over every node that wrote to it.
type UsageRow struct {
	// AccountSid is the account the traffic is billed to.
	AccountSid string
	// Region is the writing node's usage.region; empty when unset.
	Region string
	// Hour is the bucket's start, truncated to the hour, UTC.
	Hour time.Time
	// BytesSent and PacketsSent went from the client to its peers;
	// BytesReceived and PacketsReceived came from peers to the client.
	// Bytes are payload bytes (what a peer sees), not TURN framing.
	BytesSent, BytesReceived     int64
	PacketsSent, PacketsReceived int64
}

// Revocation kinds: what Revocation.Value names.
const (
	// RevokeUser: a whole TURN username ("<expiry>:<user>").
	RevokeUser = "user"
	// RevokeAccount: an AccountSid; every username minted for it.
	RevokeAccount = "account"
	// RevokeKey: "<AccountSid>:<key tag>" (auth.KeyTag); every username
	// minted from an Access Token signed by that API key.
	RevokeKey = "key"
	// RevokeAllocation: a live allocation's ID; the node holding it tears
	// it down.
	RevokeAllocation = "allocation"
)

// Revocation cuts live allocations on every node and refuses new ones. It is
// kept until Expires, after which nothing it names can authenticate anyway.
type Revocation struct {
	Kind    string
	Value   string
	Expires time.Time
}

// LiveAllocation is what a node publishes of one of its live allocations.
type LiveAllocation struct {
	// ID is the allocation's ID, unique across nodes.
	ID string
	// Node names the relay node holding it (usage.node).
	Node string
	// AccountSid is the account it is billed to.
	AccountSid string
	// Username is the TURN username that created it.
	Username string
	// Client is the client's address, Transport its transport (udp, tcp,
	// tls), Relay the relayed address.
	Client, Transport, Relay string
	// Created and Expires are the allocation's; Expires is the credential's
	// expiry, zero for a static user.
	Created, Expires time.Time
	// Permissions and Channels are counts.
	Permissions, Channels int
	// BytesSent (client to peers) and BytesReceived (peers to client).
	BytesSent, BytesReceived int64
}

// Usage is the store's part in metering and live control: usage buckets,
// revocations and the published list of live allocations. Nodes sharing a
// database share all three.
type Usage interface {
	// AddUsage adds every row to its (account, region, hour) bucket, all or
	// nothing.
	AddUsage(ctx context.Context, rows []UsageRow) error
	// ListUsage returns the buckets of the accounts whose Hour is in
	// [from, to), ordered by account, hour and region.
	ListUsage(ctx context.Context, accountSids []string, from, to time.Time) ([]UsageRow, error)

	// AddRevocation records r (a later expiry wins over an earlier one for
	// the same kind and value) and tells every WatchRevocations.
	AddRevocation(ctx context.Context, r Revocation) error
	// DeleteRevocation removes the revocation of kind and value, if any.
	DeleteRevocation(ctx context.Context, kind, value string) error
	// ListRevocations returns the revocations that expire after now, and
	// forgets the others.
	ListRevocations(ctx context.Context, now time.Time) ([]Revocation, error)
	// WatchRevocations calls changed whenever a revocation may have been
	// added (and once when it starts or reconnects), until ctx is done. It
	// returns when ctx is done.
	WatchRevocations(ctx context.Context, changed func())

	// PutLiveAllocations replaces node's published allocations with allocs,
	// stamped with now.
	PutLiveAllocations(ctx context.Context, node string, allocs []LiveAllocation, now time.Time) error
	// ListLiveAllocations returns the published allocations of the accounts
	// from nodes that published since seenAfter, newest first.
	ListLiveAllocations(ctx context.Context, accountSids []string, seenAfter time.Time) ([]LiveAllocation, error)
}
