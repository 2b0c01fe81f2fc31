package issuer

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/store"
)

// This file is the logic of live control (served in sessions_http.go): the
// live allocations of an account on every node, their teardown, and the
// revocations that cut live allocations when a credential is revoked, a key
// deleted or an account suspended. Everything goes through the store, which
// every relay node watches (package usage); nothing here talks to a relay.

// killKeep is how long a kill request stays in the store: long enough for
// every node to read it at its periodic re-read.
const killKeep = time.Hour

// AllocationResource is the JSON of one live allocation.
type AllocationResource struct {
	Sid           string `json:"sid"`
	AccountSid    string `json:"account_sid"`
	Node          string `json:"node"`
	Username      string `json:"username"`
	ClientAddress string `json:"client_address"`
	Transport     string `json:"transport"`
	RelayAddress  string `json:"relay_address"`
	DateCreated   string `json:"date_created"`
	DateExpires   string `json:"date_expires,omitempty"`
	Permissions   int    `json:"permissions"`
	Channels      int    `json:"channels"`
	BytesSent     int64  `json:"bytes_sent"`
	BytesReceived int64  `json:"bytes_received"`
	URI           string `json:"uri"`
}

// AllocationList is the live allocations of an account.
type AllocationList struct {
	Allocations []AllocationResource `json:"allocations"`
	URI         string               `json:"uri"`
}

// NewAllocationResource returns a as JSON, listed under account.
func NewAllocationResource(account string, a store.LiveAllocation) AllocationResource {
	r := AllocationResource{
		Sid: a.ID, AccountSid: a.AccountSid, Node: a.Node, Username: a.Username,
		ClientAddress: a.Client, Transport: a.Transport, RelayAddress: a.Relay,
		DateCreated: formatTime(a.Created), Permissions: a.Permissions, Channels: a.Channels,
		BytesSent: a.BytesSent, BytesReceived: a.BytesReceived,
		URI: AllocationsPath(account) + "/" + a.ID + ".json",
	}
	if !a.Expires.IsZero() {
		r.DateExpires = formatTime(a.Expires)
	}
	return r
}

// AllocationsPath is where an account's allocations are listed, without ".json".
func AllocationsPath(account string) string { return "/v1/Accounts/" + account + "/Allocations" }

// Allocations lists the live allocations of account and its subaccounts on
// every node that published its list lately; account "" lists every
// account's (for the CLI).
func (s *Service) Allocations(ctx context.Context, account string) ([]store.LiveAllocation, error) {
	sids, err := s.accountTree(ctx, account)
	if err != nil {
		return nil, err
	}
	return s.store.ListLiveAllocations(ctx, sids, s.now().Add(-s.usage.LiveWithin))
}

// KillAllocation tears down the live allocation id of account (or of one of
// its subaccounts; "" for any account) on whichever node holds it;
// ErrNotFound when it has none.
func (s *Service) KillAllocation(ctx context.Context, account, id string) error {
	live, err := s.Allocations(ctx, account)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(live, func(a store.LiveAllocation) bool { return a.ID == id }) {
		return ErrNotFound
	}
	if err := s.store.AddRevocation(ctx, store.Revocation{Kind: store.RevokeAllocation, Value: id, Expires: s.now().Add(killKeep)}); err != nil {
		return err
	}
	s.log.Info("allocation killed", zap.String("id", id), zap.String("account_sid", account))
	return nil
}

// RevokeCredential revokes a TURN username minted for account or one of its
// subaccounts: relays refuse it from now on and tear down its allocations.
// The revocation is kept until the username's expiry (plus the clock skew
// the relays allow). Another account's username is ErrNotFound.
func (s *Service) RevokeCredential(ctx context.Context, account, username string) error {
	exp, user, err := auth.ParseUsername(username)
	if err != nil {
		return &ParamError{Param: "username", Message: "Invalid username: not a TURN REST username minted by this service"}
	}
	owner, ok := auth.AccountOf(user)
	if !ok {
		return ErrNotFound
	}
	if owner != account {
		sids, err := s.accountTree(ctx, account)
		if err != nil {
			return err
		}
		if !slices.Contains(sids, owner) {
			return ErrNotFound
		}
	}
	until := exp.Add(revokeMargin)
	if now := s.now().Add(revokeMargin); now.After(until) {
		until = now
	}
	if err := s.store.AddRevocation(ctx, store.Revocation{Kind: store.RevokeUser, Value: username, Expires: until}); err != nil {
		return err
	}
	// The username is not a secret, but it names an end user: not logged.
	s.log.Info("credential revoked", zap.String("account_sid", owner))
	return nil
}

// revokeMargin outlasts the clock skew relays tolerate on expiries.
const revokeMargin = 5 * time.Minute

// revokeMinted revokes, on every node, what a deleted key or a suspended
// account minted: kept for the longest a credential it minted may live.
func (s *Service) revokeMinted(ctx context.Context, kind, value string) error {
	r := store.Revocation{Kind: kind, Value: value, Expires: s.now().Add(s.maxTTL + revokeMargin)}
	if err := s.store.AddRevocation(ctx, r); err != nil {
		return fmt.Errorf("revoke live allocations: %w", err)
	}
	return nil
}

// onStatusChange cuts the live allocations of a suspended account and of
// its subaccounts; reactivating it lifts those revocations, except for a
// subaccount suspended on its own.
func (s *Service) onStatusChange(ctx context.Context, a store.Account) error {
	all, err := s.store.ListAccounts(ctx)
	if err != nil {
		return err
	}
	for _, acc := range all {
		if acc.Sid != a.Sid && acc.ParentSid != a.Sid {
			continue
		}
		switch {
		case a.Status == store.StatusSuspended:
			err = s.revokeMinted(ctx, store.RevokeAccount, acc.Sid)
		case acc.Status == store.StatusActive:
			err = s.store.DeleteRevocation(ctx, store.RevokeAccount, acc.Sid)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
